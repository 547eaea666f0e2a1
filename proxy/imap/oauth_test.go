package imap_test

import (
	"crypto/tls"
	"encoding/base64"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/imap"
	"mailproxy/proxy/proxytest"
)

const (
	oauthUser  = "alice@example.test"
	oauthLocal = "local \"pass\" phrase"
)

// oauthSession is go-imap's in-memory session that logs in with XOAUTH2
// or OAUTHBEARER only, checking the token with the authorization server.
type oauthSession struct {
	imapserver.Session
	mechs []string
	valid func(token string) (string, bool)
}

func (s *oauthSession) AuthenticateMechanisms() []string { return s.mechs }

func (s *oauthSession) Authenticate(mech string) (sasl.Server, error) {
	for _, m := range s.mechs {
		if m == mech {
			return proxytest.OAuthServer(mech, func(user, token string) error {
				if u, ok := s.valid(token); !ok || u != user {
					return errNoToken
				}
				return s.Session.Login(user, password) // the in-memory user's
			}, errNoToken), nil
		}
	}
	return nil, &goimap.Error{Type: goimap.StatusResponseTypeNo, Text: "unsupported mechanism"}
}

func (s *oauthSession) Login(string, string) error { return errNoToken }

var errNoToken = &goimap.Error{Type: goimap.StatusResponseTypeNo, Code: goimap.ResponseCodeAuthenticationFailed, Text: "invalid token"}

// startOAuthProvider is an IMAP provider that takes only access tokens,
// with its OAuth2 authorization server, and mailproxy before it.
func startOAuthProvider(t *testing.T, mechs ...string) (*proxytest.OAuth, *proxytest.Proxy, *testkit.Buffer) {
	t.Helper()
	pki := testkit.NewPKI(t)
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(oauthUser, password)
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	traffic := &testkit.Buffer{}
	var o atomic.Pointer[proxytest.OAuth] // set before the first connection
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &oauthSession{Session: mem.NewSession(), mechs: mechs, valid: o.Load().Server.Valid}, nil, nil
		},
		Caps:        goimap.CapSet{goimap.CapIMAP4rev1: {}},
		Logger:      discardLogger{},
		DebugWriter: traffic,
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := imapserver.New(opts)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := proxytest.Provider(pki, "example", "imaps://"+ln.Addr().String())
	oa := proxytest.StartOAuth(t, pki, p, oauthUser, oauthLocal)
	o.Store(oa)
	px := proxytest.StartProxy(t, imap.Front{}, policy.IMAP, p, nil, oa.Option())
	return oa, px, traffic
}

func quoteIMAP(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// The app logs in with the local password; the provider sees an access
// token and never the password; the session then works as any other.
func TestOAuthLogin(t *testing.T) {
	for _, mech := range []string{proxy.MechOAUTHBEARER, proxy.MechXOAUTH2} {
		t.Run(mech, func(t *testing.T) {
			o, px, traffic := startOAuthProvider(t, mech)
			c := testkit.Dial(t, px.Addr)
			c.Expect("* OK *")
			c.Send("a1 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
			c.Expect("a1 OK *")
			c.Send("a2 SELECT INBOX")
			c.ExpectUntil("a2 OK *")
			c.Send("a3 LOGOUT")
			c.ExpectUntil("a3 OK *")
			c.C.Close()
			px.Audit.WaitFor(t, policy.EventSessionEnd, 1)
			if !strings.Contains(traffic.String(), "AUTHENTICATE "+mech) {
				t.Fatalf("the provider saw no AUTHENTICATE %s", mech)
			}
			if strings.Contains(traffic.String(), oauthLocal) {
				t.Fatal("the local password reached the provider")
			}
			if ev := px.Audit.Find(t, policy.EventAuth); len(ev) != 1 || ev[0]["result"] != "ok" {
				t.Fatalf("auth events %v", ev)
			}
			if ev := px.Audit.Find(t, policy.EventOAuth2Token); len(ev) != 1 || ev[0]["result"] != "refreshed" {
				t.Fatalf("oauth2.token events %v", ev)
			}
			var https int
			for _, e := range px.Audit.Find(t, policy.EventUpstreamTLS) {
				if e["proto"] == "https" {
					https++
				}
			}
			if https != 1 {
				t.Fatalf("%d token endpoint connections audited", https)
			}
			px.Audit.NoSecret(t, o.Secrets()...)
		})
	}
}

// Without SASL-IR the token follows the provider's "+" (go-imap's server
// always offers SASL-IR, so a scripted provider plays this one).
func TestOAuthLoginWithoutSASLIR(t *testing.T) {
	pki := testkit.NewPKI(t)
	var oa atomic.Pointer[proxytest.OAuth] // set before the first connection
	ep := scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready")
		c.Expect("mp1 AUTHENTICATE XOAUTH2")
		c.Send("+ ")
		ir, err := base64.StdEncoding.DecodeString(c.Line())
		user, token, perr := proxytest.ParseOAuth(proxy.MechXOAUTH2, ir)
		if who, ok := oa.Load().Server.Valid(token); err != nil || perr != nil || !ok || who != user {
			c.Send("mp1 NO [AUTHENTICATIONFAILED] bad token")
			return
		}
		c.Send("mp1 OK [CAPABILITY IMAP4rev1] logged in")
		c.Expect("a2 LOGOUT")
		c.Send("* BYE")
		c.Send("a2 OK bye")
	})
	p := proxytest.Provider(pki, "example", ep)
	o := proxytest.StartOAuth(t, pki, p, oauthUser, oauthLocal)
	oa.Store(o)
	px := proxytest.StartProxy(t, imap.Front{}, policy.IMAP, p, nil, o.Option())
	c := testkit.Dial(t, px.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
	c.Expect("a1 OK * logged in")
	c.Send("a2 LOGOUT")
	c.ExpectUntil("a2 OK bye")
	px.Audit.NoSecret(t, o.Secrets()...)
}

// A wrong local password is the provider's usual failure, audited, and
// nothing is dialled; a provider that refuses the token gets it answered
// properly, and the next login fetches a new one.
func TestOAuthFailures(t *testing.T) {
	o, px, _ := startOAuthProvider(t, proxy.MechXOAUTH2)
	c := testkit.Dial(t, px.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP("wrong password"))
	c.Expect("a1 NO [AUTHENTICATIONFAILED] *")
	if ev := px.Audit.Find(t, policy.EventAuth); len(ev) != 1 || ev[0]["result"] != "fail" {
		t.Fatalf("auth events %v", px.Audit.String())
	}
	if n := len(px.Audit.Find(t, policy.EventUpstreamConnect)); n != 0 {
		t.Fatalf("%d connections for a wrong local password", n)
	}
	// A good login caches a token; the provider then stops accepting it.
	c.Send("a2 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
	c.Expect("a2 OK *")
	c.Send("a3 LOGOUT")
	c.ExpectUntil("a3 OK *")
	o.Server.ExpireAccess(oauthUser)
	c = testkit.Dial(t, px.Addr)
	c.Expect("* OK *")
	c.Send("b1 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
	c.Expect("b1 NO *invalid token*") // the provider's own tagged NO, not a BAD
	c.Send("b2 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
	c.Expect("b2 OK *")
	if n := o.Server.Count("refresh"); n != 2 {
		t.Fatalf("%d refreshes", n)
	}
	px.Audit.NoSecret(t, o.Secrets()...)
}

// A revoked grant: a clear text for the app, oauth2.token result=revoked,
// and the token endpoint is not asked again for that grant.
func TestOAuthRevoked(t *testing.T) {
	o, px, _ := startOAuthProvider(t, proxy.MechOAUTHBEARER)
	o.Server.Revoke(oauthUser)
	c := testkit.Dial(t, px.Addr)
	c.Expect("* OK *")
	for _, tag := range []string{"a1", "a2"} {
		c.Send("%s LOGIN %s %s", tag, quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
		c.Expect(tag + " NO [AUTHENTICATIONFAILED] the provider no longer accepts mailproxy's authorization for " + oauthUser + ": run `mailproxy authorize -provider example " + oauthUser + "`")
	}
	if n := o.Server.Count("refresh"); n != 1 {
		t.Fatalf("%d refreshes", n)
	}
	ev := px.Audit.Find(t, policy.EventOAuth2Token)
	if len(ev) != 2 || ev[0]["result"] != "revoked" || ev[0]["account"] != oauthUser || ev[0]["provider"] != "example" {
		t.Fatalf("oauth2.token events %v", ev)
	}
	if ev := px.Audit.Find(t, policy.EventAuth); len(ev) != 2 || ev[1]["result"] != "fail" {
		t.Fatalf("auth events %v", ev)
	}
	px.Audit.NoSecret(t, o.Secrets()...)
}

// A provider with OAuth2 that offers only password mechanisms gets no
// login at all: the local password is never sent, nor any password.
func TestOAuthNeverSendsPassword(t *testing.T) {
	pki := testkit.NewPKI(t)
	got := make(chan string, 10)
	ep := scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN SASL-IR] ready")
		for {
			l := c.Line() // ends (by panic, recovered) when mailproxy hangs up
			got <- l
		}
	})
	p := proxytest.Provider(pki, "example", ep)
	o := proxytest.StartOAuth(t, pki, p, oauthUser, oauthLocal)
	px := proxytest.StartProxy(t, imap.Front{}, policy.IMAP, p, nil, o.Option())
	c := testkit.Dial(t, px.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN %s %s", quoteIMAP(oauthUser), quoteIMAP(oauthLocal))
	c.Expect("a1 NO [UNAVAILABLE] the provider offers neither AUTHENTICATE OAUTHBEARER nor XOAUTH2*")
	px.Audit.WaitFor(t, policy.EventOAuth2Token, 1)
	select {
	case l := <-got:
		t.Fatalf("the provider got a command (%d bytes)", len(l))
	case <-time.After(200 * time.Millisecond):
	}
}
