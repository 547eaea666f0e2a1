package pop3_test

import (
	"encoding/base64"
	"sync/atomic"
	"testing"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/proxytest"
)

const (
	oauthUser  = "alice@example.test"
	oauthLocal = "local pass phrase"
)

// oauthProvider plays a POP3 provider that lists mechs and takes an
// access token only (after "+", as a token is longer than a command line
// may be); a refused token gets the JSON error challenge, which must be
// answered as the mechanism says before the -ERR.
func oauthProvider(t *testing.T, pki *testkit.PKI, mechs string, valid func() func(string) (string, bool)) string {
	return scripted(t, pki, true, func(c *testkit.Conn) {
		c.Send("+OK POP3 ready")
		c.Expect("CAPA")
		c.Send("+OK\r\nUSER\r\nSASL %s\r\n.", mechs)
		l := c.Expect("AUTH *")
		mech := l[len("AUTH "):]
		c.Send("+ ")
		ir, err := base64.StdEncoding.DecodeString(c.Line())
		if err != nil {
			c.Send("-ERR bad base64")
			return
		}
		user, token, err := proxytest.ParseOAuth(mech, ir)
		if who, ok := valid()(token); err != nil || !ok || who != user {
			c.Send("+ %s", base64.StdEncoding.EncodeToString([]byte(`{"status":"invalid_token"}`)))
			c.Expect(base64.StdEncoding.EncodeToString(proxy.OAuthFailureAnswer(mech)))
			c.Send("-ERR [AUTH] invalid token")
			return
		}
		c.Send("+OK logged in with %s", mech)
		c.Expect("QUIT")
		c.Send("+OK bye")
	})
}

func TestOAuthLogin(t *testing.T) {
	for _, tc := range []struct{ mechs, want string }{
		{"PLAIN OAUTHBEARER XOAUTH2", proxy.MechOAUTHBEARER},
		{"XOAUTH2 PLAIN", proxy.MechXOAUTH2},
	} {
		t.Run(tc.want, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			var oa atomic.Pointer[proxytest.OAuth] // set before the first connection
			ep := oauthProvider(t, pki, tc.mechs, func() func(string) (string, bool) { return oa.Load().Server.Valid })
			pr := proxytest.Provider(pki, "example", "pop3s://"+ep)
			o := proxytest.StartOAuth(t, pki, pr, oauthUser, oauthLocal)
			oa.Store(o)
			px := proxytest.StartProxy(t, pop3.Front{}, policy.POP3, pr, nil, o.Option())
			c := testkit.Dial(t, px.Addr)
			c.Expect("+OK *")
			c.Send("USER %s", oauthUser)
			c.Expect("+OK *")
			c.Send("PASS wrong password")
			c.Expect("-ERR [AUTH] authentication failed*")
			c.Send("USER %s", oauthUser)
			c.Expect("+OK *")
			c.Send("PASS %s", oauthLocal)
			c.Expect("+OK logged in with " + tc.want)
			c.Send("QUIT")
			c.Expect("+OK bye")
			// The cached token is refused: the -ERR reaches the app.
			o.Server.ExpireAccess(oauthUser)
			c = testkit.Dial(t, px.Addr)
			c.Expect("+OK *")
			c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+oauthUser+"\x00"+oauthLocal)))
			c.Expect("-ERR [AUTH] invalid token")
			// Revoked: a clear text.
			o.Server.Revoke(oauthUser)
			c.Send("USER %s", oauthUser)
			c.Expect("+OK *")
			c.Send("PASS %s", oauthLocal)
			c.Expect("-ERR [AUTH] the provider no longer accepts mailproxy's authorization for " + oauthUser + ": run `mailproxy authorize -provider example " + oauthUser + "`")
			if ev := px.Audit.Find(t, policy.EventOAuth2Token); len(ev) != 2 || ev[0]["result"] != "refreshed" || ev[1]["result"] != "revoked" {
				t.Fatalf("oauth2.token events %v", ev)
			}
			px.Audit.NoSecret(t, o.Secrets()...)
		})
	}
}
