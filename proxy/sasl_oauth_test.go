package proxy_test

import (
	"testing"

	"mailproxy/proxy"
)

func TestOAuthInitialResponse(t *testing.T) {
	tok := proxy.NewSecret("ya29.a0Af-_~+/x==")
	cases := []struct{ mech, user, want string }{
		// Google's and Microsoft's XOAUTH2 documentation.
		{proxy.MechXOAUTH2, "someuser@example.com", "user=someuser@example.com\x01auth=Bearer ya29.a0Af-_~+/x==\x01\x01"},
		// RFC 7628 §4.1, with the authorization identity escaped as a
		// saslname (RFC 5801 §4).
		{proxy.MechOAUTHBEARER, "user@example.com", "n,a=user@example.com,\x01auth=Bearer ya29.a0Af-_~+/x==\x01\x01"},
		{proxy.MechOAUTHBEARER, "a,b=c", "n,a=a=2Cb=3Dc,\x01auth=Bearer ya29.a0Af-_~+/x==\x01\x01"},
	}
	for _, c := range cases {
		if got := string(proxy.OAuthInitialResponse(c.mech, c.user, tok)); got != c.want {
			t.Errorf("%s %q: got %q, want %q", c.mech, c.user, got, c.want)
		}
	}
	if string(proxy.OAuthFailureAnswer(proxy.MechOAUTHBEARER)) != "\x01" || len(proxy.OAuthFailureAnswer(proxy.MechXOAUTH2)) != 0 {
		t.Error("wrong answers to an error challenge")
	}
}

func TestValidBearerToken(t *testing.T) {
	for tok, want := range map[string]bool{
		"abc":                true,
		"ya29.a0Af-_~+/x==":  true,
		"EwBwA8l6BAAU+/9z=":  true,
		"":                   false,
		"=":                  false,
		"abc=d":              false,
		"a b":                false,
		"a\x01auth=Bearer x": false,
		"a\r\nx":             false,
		"ä":                  false,
	} {
		if got := proxy.ValidBearerToken(tok); got != want {
			t.Errorf("ValidBearerToken(%q) = %v", tok, got)
		}
	}
}
