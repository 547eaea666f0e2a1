package proxy

import "strings"

// The two SASL mechanisms that carry an OAuth2 access token to a provider,
// on the client side (mailproxy logging in at the provider):
//
//   - XOAUTH2, Google's and Microsoft's: "user=" user ^A "auth=Bearer "
//     token ^A ^A. A refusal comes as a challenge holding a JSON error,
//     which the client answers with an empty response; the server then
//     ends the exchange with its failure reply.
//   - OAUTHBEARER (RFC 7628 §3.1): a GS2 header "n,a=" user "," then ^A
//     "auth=Bearer " token ^A ^A. A refusal is a JSON error challenge the
//     client answers with a single ^A (§3.2.3).
//
// The token must be a bearer token (RFC 6750 §2.1: letters, digits and
// -._~+/ then '='s); package grant refuses any other from a token
// endpoint, so no token can add a field.

// Mechanism names as providers list them.
const (
	MechXOAUTH2     = "XOAUTH2"
	MechOAUTHBEARER = "OAUTHBEARER"
)

// OAuthInitialResponse is the client's first message of mech (XOAUTH2 or
// OAUTHBEARER) for user with token, not yet base64-encoded.
func OAuthInitialResponse(mech, user string, token Secret) []byte {
	if mech == MechOAUTHBEARER {
		return []byte("n,a=" + saslName(user) + ",\x01auth=Bearer " + token.Reveal() + "\x01\x01")
	}
	return []byte("user=" + user + "\x01auth=Bearer " + token.Reveal() + "\x01\x01")
}

// OAuthFailureAnswer is the client's answer to the error challenge of a
// refused mech, not yet base64-encoded.
func OAuthFailureAnswer(mech string) []byte {
	if mech == MechOAUTHBEARER {
		return []byte{1}
	}
	return []byte{}
}

// OAuthMech is the mechanism an OAuth2 login uses with a provider that
// offers the mechanisms offers says yes to: OAUTHBEARER (RFC 7628, the
// standard) when offered, else XOAUTH2; "" when neither is.
func OAuthMech(offers func(mech string) bool) string {
	for _, m := range []string{MechOAUTHBEARER, MechXOAUTH2} {
		if offers(m) {
			return m
		}
	}
	return ""
}

// saslName escapes ',' and '=' in an authorization identity (RFC 5801
// §4, as RFC 7628 uses it).
func saslName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// ValidBearerToken reports whether t is a token RFC 6750 §2.1 allows
// (b64token), which no SASL separator or line break can hide in.
func ValidBearerToken(t string) bool {
	if t == "" || len(t) > 16<<10 {
		return false
	}
	i := 0
	for ; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(t); i++ {
		if t[i] != '=' {
			return false
		}
	}
	return true
}
