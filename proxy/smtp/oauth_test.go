package smtp_test

import (
	"strings"
	"testing"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
	"mailproxy/proxy/smtp"
)

const oauthLocal = "local pass phrase"

// startOAuth is the test provider taking only access tokens with mechs,
// its authorization server, and mailproxy before it.
func startOAuth(t *testing.T, mechs ...string) (*provider, *proxytest.OAuth, *proxytest.Proxy) {
	t.Helper()
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	pr := proxytest.Provider(pki, "example", prov.endpoint)
	o := proxytest.StartOAuth(t, pki, pr, user, oauthLocal)
	prov.set(func(p *provider) { p.mechs, p.valid = mechs, o.Server.Valid })
	px := proxytest.StartProxy(t, smtp.Front{}, policy.SMTP, pr, nil, o.Option())
	return prov, o, px
}

func TestOAuthSubmit(t *testing.T) {
	for _, mech := range []string{proxy.MechOAUTHBEARER, proxy.MechXOAUTH2} {
		t.Run(mech, func(t *testing.T) {
			prov, o, px := startOAuth(t, mech)
			c := testkit.Dial(t, px.Addr)
			greet(c, "app.local")
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+oauthLocal))
			c.Expect("235 *")
			c.Send("MAIL FROM:<%s>", user)
			c.Expect("250 *")
			c.Send("RCPT TO:<bob@example.test>")
			c.Expect("250 *")
			c.Send("DATA")
			c.Expect("354 *")
			c.Send("Subject: hi\r\n\r\nhello\r\n.")
			c.Expect("250 *")
			c.Send("QUIT")
			c.Expect("221 *")
			if got := prov.received(); len(got) != 1 || !strings.Contains(string(got[0].data), "hello") {
				t.Fatalf("received %v", got)
			}
			if a := prov.authsSeen(); len(a) != 1 || a[0].mech != mech || !a[0].ok {
				t.Fatalf("auths %+v", a)
			}
			px.Audit.NoSecret(t, o.Secrets()...)
		})
	}
}

func TestOAuthSubmitFailures(t *testing.T) {
	prov, o, px := startOAuth(t, proxy.MechXOAUTH2)
	c := testkit.Dial(t, px.Addr)
	greet(c, "app.local")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00wrong password"))
	c.Expect("535 5.7.8 authentication failed*")
	if len(prov.authsSeen()) != 0 || prov.conns.Load() != 0 {
		t.Fatal("the provider was contacted for a wrong local password")
	}
	// A revoked grant: a clear 535 and oauth2.token result=revoked.
	o.Server.Revoke(user)
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+oauthLocal))
	c.Expect("535 5.7.8 the provider no longer accepts mailproxy's authorization for " + user + ": run `mailproxy authorize -provider example " + user + "`")
	if ev := px.Audit.Find(t, policy.EventOAuth2Token); len(ev) != 1 || ev[0]["result"] != "revoked" {
		t.Fatalf("oauth2.token events %v", ev)
	}
	px.Audit.NoSecret(t, o.Secrets()...)
}

// The provider refuses a token: its 535 reaches the app (the error
// challenge was answered), and the next AUTH gets a new token.
func TestOAuthProviderRefusesToken(t *testing.T) {
	prov, o, px := startOAuth(t, proxy.MechOAUTHBEARER)
	c := testkit.Dial(t, px.Addr)
	greet(c, "app.local")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+oauthLocal))
	c.Expect("235 *")
	c.Send("QUIT")
	c.Expect("221 *")
	o.Server.ExpireAccess(user)
	c = testkit.Dial(t, px.Addr)
	greet(c, "app.local")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+oauthLocal))
	c.Expect("535 *")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+oauthLocal))
	c.Expect("235 *")
	if a := prov.authsSeen(); len(a) != 3 || a[1].ok || !a[2].ok {
		t.Fatalf("auths %+v", a)
	}
}
