package proxy

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzOAuthInitialResponse: for a token ValidBearerToken accepts and a user
// name without control characters (grant refuses to store any other), the
// initial response of both mechanisms holds exactly its fields: no token
// or user name can add, end or split one.
func FuzzOAuthInitialResponse(f *testing.F) {
	for _, s := range [][2]string{
		{"alice@example.com", "ya29.a0AfH6SMB-x_y~z+/=="},
		{"a,=b@example.com", "abc"},
		{"alice", "abc\x01auth=Bearer evil"},
		{"alice\x01auth=x", "abc"},
		{"", "="},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, user, token string) {
		if !ValidBearerToken(token) {
			return
		}
		if strings.ContainsAny(token, "\x00\x01\r\n ,") {
			t.Fatalf("ValidBearerToken accepted %q", token)
		}
		if strings.IndexFunc(user, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			return
		}
		sec := NewSecret(token)
		x := OAuthInitialResponse(MechXOAUTH2, user, sec)
		if !bytes.HasSuffix(x, []byte("\x01\x01")) {
			t.Fatalf("XOAUTH2 message not ended by ^A^A: %q", x)
		}
		if f := strings.Split(string(x[:len(x)-2]), "\x01"); len(f) != 2 || f[0] != "user="+user || f[1] != "auth=Bearer "+token {
			t.Fatalf("XOAUTH2 fields %q", f)
		}
		o := OAuthInitialResponse(MechOAUTHBEARER, user, sec)
		if !bytes.HasSuffix(o, []byte("\x01\x01")) {
			t.Fatalf("OAUTHBEARER message not ended by ^A^A: %q", o)
		}
		f := strings.Split(string(o[:len(o)-2]), "\x01")
		if len(f) != 2 || f[1] != "auth=Bearer "+token {
			t.Fatalf("OAUTHBEARER fields %q", f)
		}
		// The GS2 header: "n", "a=" the escaped user, and an empty field.
		gs2 := strings.Split(f[0], ",")
		if len(gs2) != 3 || gs2[0] != "n" || gs2[1] != "a="+saslName(user) || gs2[2] != "" {
			t.Fatalf("OAUTHBEARER GS2 header %q", f[0])
		}
		if strings.NewReplacer("=3D", "=", "=2C", ",").Replace(gs2[1][2:]) != user {
			t.Fatalf("the user %q does not come back from %q", user, gs2[1])
		}
	})
}
