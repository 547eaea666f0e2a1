package pop3_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/proxytest"
)

// refusedEvents is the audit stream of a session whose provider the
// policy refused: exactly one policy.denied, no auth.
var refusedEvents = []string{"session.start", "upstream.connect", "policy.denied", "session.end"}

// checkRefused checks what the app and the audit log show when the policy
// refuses the provider at login: an -ERR naming the reason, and exactly
// one policy.denied event with that reason.
func checkRefused(t *testing.T, p *proxytest.Proxy, reason string, detail string) {
	t.Helper()
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK mailproxy ready")
	c.Send("USER alice")
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	got := c.Expect("-ERR [SYS/TEMP] mailproxy refused the provider (reason: " + reason + "): " + detail)
	c.Send("QUIT")
	c.Expect("+OK *")
	c.ExpectClosed(5 * time.Second)
	// What the provider said before TLS never reaches the app.
	for _, preTLS := range []string{"maintenance", "unknown command", "Begin TLS"} {
		if strings.Contains(got, preTLS) {
			t.Errorf("pre-TLS provider text reached the app: %q", got)
		}
	}
	checkAudit(t, p, 1, refusedEvents)
	d := p.Audit.Find(t, "policy.denied")
	if len(d) != 1 || d[0]["reason"] != reason || d[0]["host"] != "127.0.0.1" {
		t.Errorf("policy.denied events %v, want one with reason %s", d, reason)
	}
}

// TestUpstreamSTLSFailsClosed plays providers on pop3:// (STLS required)
// that do not do STLS right (RFC 2595 §4): mailproxy must refuse them
// before any credential is asked for.
func TestUpstreamSTLSFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		play   func(c *testkit.Conn)
		detail string // what the app is told
		audit  string // the policy.denied detail
	}{
		{"no STLS in CAPA", func(c *testkit.Conn) {
			c.Send("+OK ready")
			c.Expect("CAPA")
			c.SendRaw("+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
			c.Line()
		}, "the server does not offer STLS", "the server does not offer STLS"},
		{"no CAPA", func(c *testkit.Conn) {
			c.Send("+OK ready")
			c.Expect("CAPA")
			c.Send("-ERR unknown command")
			c.Line()
		}, "the server has no CAPA, so it cannot offer STLS", `the server has no CAPA, so it cannot offer STLS (the server said: "-ERR unknown command")`},
		{"STLS refused", func(c *testkit.Conn) {
			c.Send("+OK ready")
			c.Expect("CAPA")
			c.SendRaw("+OK\r\nSTLS\r\n.\r\n")
			c.Expect("STLS")
			c.Send("-ERR [SYS/TEMP] TLS is down for maintenance")
			c.Line()
		}, "the server refused STLS", `the server refused STLS (the server said: "-ERR [SYS/TEMP] TLS is down for maintenance")`},
		{"bytes injected after +OK to STLS", func(c *testkit.Conn) {
			c.Send("+OK ready")
			c.Expect("CAPA")
			c.SendRaw("+OK\r\nSTLS\r\n.\r\n")
			c.Expect("STLS")
			// One write, so that both lines arrive together, as an
			// attacker in the path would send them.
			c.SendRaw("+OK Begin TLS\r\n+OK Maildrop has 1 message\r\n")
			c.Line()
		}, "the server sent * bytes after its STARTTLS reply, before the TLS handshake (possible command injection)",
			"the server sent 28 bytes after its STARTTLS reply*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			addr := scripted(t, pki, false, tc.play)
			p := start(t, pki, "pop3://"+addr)
			checkRefused(t, p, "starttls", tc.detail)
			// The audit log keeps the whole story.
			if d := p.Audit.Find(t, "policy.denied")[0]; !testkit.Match(tc.audit, d["detail"].(string)) {
				t.Errorf("policy.denied detail %q, want %q", d["detail"], tc.audit)
			}
		})
	}
}

// TestUpstreamTLSPolicy: a provider whose TLS the policy refuses, over
// implicit TLS and after STLS.
func TestUpstreamTLSPolicy(t *testing.T) {
	t.Run("untrusted certificate", func(t *testing.T) {
		for _, scheme := range []string{"pop3s", "pop3"} {
			t.Run(scheme, func(t *testing.T) {
				pki := testkit.NewPKI(t)
				prov := startProvider(t, pki, scheme, pop3server.Options{})
				provider := proxytest.Provider(pki, "example", prov.endpoint)
				provider.TLS.Roots = nil // system roots: the test CA is not trusted
				p := proxytest.StartProxy(t, pop3.Front{}, policy.POP3, provider, nil)
				checkRefused(t, p, "certificate", "the certificate did not verify*")
			})
		}
	})
	t.Run("TLS 1.1 only", func(t *testing.T) {
		pki := testkit.NewPKI(t)
		cfg := pki.ServerConfig()
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := pop3server.New(pop3server.Options{Backend: pop3server.NewMemBackend()})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		p := start(t, pki, "pop3s://"+ln.Addr().String())
		checkRefused(t, p, "tls_version", "the server refused every TLS version the policy allows*")
	})
}

// TestUpstreamRefusalAtLogin: on a "*" listener the provider is dialled at
// login; a refusal then is an -ERR for that login, and the session goes on.
func TestUpstreamRefusalAtLogin(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr := scripted(t, pki, false, func(c *testkit.Conn) {
		c.Send("+OK ready")
		c.Expect("CAPA")
		c.SendRaw("+OK\r\nUSER\r\n.\r\n")
		c.Line()
	})
	a := proxytest.Provider(pki, "a", "pop3://"+addr)
	a.Domains = []string{"a.test"}
	p := proxytest.StartProxy(t, pop3.Front{}, policy.POP3, nil, []*policy.Provider{a})
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK mailproxy ready")
	c.Send("USER alice@a.test")
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("-ERR [SYS/TEMP] mailproxy refused the provider (reason: starttls): the server does not offer STLS")
	c.Send("NOOP")
	c.Expect("+OK")
	c.Send("QUIT")
	c.Expect("+OK *")
	c.ExpectClosed(5 * time.Second)
	checkAudit(t, p, 1, refusedEvents)
}
