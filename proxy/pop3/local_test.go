package pop3_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
)

// localTLS sets the listener's local_security; for "starttls" and "tls"
// the app-side TLS uses the test PKI's certificate, as proxy.Server sets
// it up.
func localTLS(pki *testkit.PKI, mode proxy.LocalSecurity) proxytest.ProxyOptions {
	return func(st *proxy.Settings) {
		st.Listen.LocalSecurity = mode
		st.LocalTLS = nil
		if mode != proxy.LocalNone {
			st.LocalTLS = pki.ServerConfig()
		}
	}
}

// asLAN makes the proxy's listener behave as one configured on a LAN
// address (where credentials need local TLS first) while it stays bound
// to 127.0.0.1: its next sessions get access rules of a LAN listener.
func asLAN(p *proxytest.Proxy) {
	st := *p.Listener.Settings()
	st.Listen.Access.Loopback = false
	p.Listener.Update(&st)
}

func clientTLS(t *testing.T, pki *testkit.PKI, c *testkit.Conn) *testkit.Conn {
	t.Helper()
	tc := tls.Client(c.C, &tls.Config{RootCAs: pki.CA.Pool(), ServerName: "127.0.0.1"})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("local TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	return testkit.Wrap(t, tc)
}

// TestLocalSTLS: on a LAN listener with local_security = "starttls"
// credentials are refused until STLS (RFC 2595 §4), and CAPA says so.
func TestLocalSTLS(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint, localTLS(pki, proxy.LocalSTARTTLS))
	asLAN(p)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK mailproxy ready")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got, want := multiline(t, c), "RESP-CODES\r\nAUTH-RESP-CODE\r\nSTLS\r\n.\r\n"; got != want {
		t.Errorf("CAPA before local TLS\n%q, want\n%q", got, want)
	}
	c.Send("USER %s", user)
	c.Expect("-ERR [AUTH] Use STLS *")
	c.Send("PASS %s", password)
	c.Expect("-ERR [AUTH] Use STLS *")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("-ERR [AUTH] Use STLS *")
	c.Send("AUTH")
	c.Expect("-ERR [AUTH] Use STLS *")
	c.Send("STLS")
	c.Expect("+OK Begin TLS*")
	c = clientTLS(t, pki, c)
	c.Send("CAPA")
	c.Expect("+OK *")
	if got, want := multiline(t, c), "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"; got != want {
		t.Errorf("CAPA under local TLS\n%q, want\n%q", got, want)
	}
	c.Send("STLS")
	c.Expect("-ERR Already under TLS")
	login(c)
	c.Send("RETR 1")
	c.Expect("+OK *")
	if got := multiline(t, c); got != messageWire {
		t.Errorf("RETR 1 under local TLS %q", got)
	}
	c.Send("QUIT")
	c.Expect("+OK Bye*")
	c.ExpectClosed(5 * time.Second)
	// Each of the four attempts before STLS is a refusal on record.
	denied := []string{"policy.denied", "policy.denied", "policy.denied", "policy.denied"}
	checkAudit(t, p, 1, append(append([]string{"session.start"}, denied...), sessionEvents[1:]...))
	for _, d := range p.Audit.Find(t, "policy.denied") {
		if d["reason"] != "plaintext_auth" {
			t.Errorf("refusal %v, want reason plaintext_auth", d)
		}
	}
}

// TestLocalSTLSInjection: bytes the app pipelines behind STLS would be
// taken as sent under TLS; mailproxy ends the session and audits it.
func TestLocalSTLSInjection(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint, localTLS(pki, proxy.LocalSTARTTLS))
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.SendRaw("STLS\r\nUSER " + user + "\r\n")
	c.Expect("+OK Begin TLS*")
	c.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 1)
	d := p.Audit.Find(t, "policy.denied")
	if len(d) != 1 || d[0]["reason"] != "starttls" {
		t.Errorf("policy.denied events %v", d)
	}
}

// TestNoLocalSTLS: STLS is neither listed nor accepted where the listener
// has no local TLS.
func TestNoLocalSTLS(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); strings.Contains(got, "STLS") {
		t.Errorf("CAPA offers STLS without local TLS: %q", got)
	}
	c.Send("STLS")
	c.Expect("-ERR STLS is not offered on this listener")
	login(c)
}

// TestLocalImplicitTLS: local_security = "tls" is TLS from the first
// byte, like port 995.
func TestLocalImplicitTLS(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3", pop3server.Options{})
	p := start(t, pki, prov.endpoint, localTLS(pki, proxy.LocalTLS))
	asLAN(p) // under TLS, credentials are fine even on a LAN listener
	c := clientTLS(t, pki, testkit.Dial(t, p.Addr))
	c.Expect("+OK mailproxy ready")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got, want := multiline(t, c), "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"; got != want {
		t.Errorf("CAPA under local TLS\n%q, want\n%q", got, want)
	}
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("+OK Maildrop has 2 messages*")
	c.Send("QUIT")
	c.Expect("+OK Bye*")
	c.ExpectClosed(5 * time.Second)
	checkAudit(t, p, 1, sessionEvents)
}
