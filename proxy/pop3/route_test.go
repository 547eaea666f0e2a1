package pop3_test

import (
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/proxytest"
)

// TestRouteByLoginDomain: on a "*" listener the login's domain picks the
// provider; logins no provider serves, or that name a server outside the
// provider's hosts, are refused with -ERR and audited as
// non_provider_host, without any connection upstream.
func TestRouteByLoginDomain(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	prov.backend.AddUser("alice@a.test", password).Add(second)
	a := proxytest.Provider(pki, "a", prov.endpoint)
	a.Domains = []string{"a.test"}
	b := proxytest.Provider(pki, "b", "pop3s://"+closedPort(t))
	b.Domains = []string{"b.test"}
	p := proxytest.StartProxy(t, pop3.Front{}, policy.POP3, nil, []*policy.Provider{a, b})
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK mailproxy ready")
	// The provider is not known yet: no PIPELINING, TOP or UIDL.
	c.Send("CAPA")
	c.Expect("+OK *")
	if got, want := multiline(t, c), "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"; got != want {
		t.Errorf("CAPA on a \"*\" listener\n%q, want\n%q", got, want)
	}
	c.Send("USER nobody@unknown.test")
	c.Expect(`-ERR [SYS/PERM] mailproxy refused this login (reason: non_provider_host): no configured provider serves the login domain "unknown.test"`)
	c.Send("PASS %s", password) // the refused USER is forgotten
	c.Expect("-ERR Send USER first")
	c.Send("USER alice")
	c.Expect("-ERR [SYS/PERM] *no provider for this login*")
	c.Send("USER alice@a.test@pop.evil.test")
	c.Expect("-ERR [SYS/PERM] *pop.evil.test*")
	c.Send("AUTH PLAIN %s", b64("\x00mallory@evil.test\x00"+password))
	c.Expect(`-ERR [SYS/PERM] *"evil.test"*`)
	// b is configured but down: the login gets an -ERR, the session goes on.
	c.Send("USER bob@b.test")
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("-ERR [SYS/TEMP] mailproxy cannot reach the provider*")
	c.Send("USER alice@a.test")
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("+OK Maildrop has 1 messages*")
	c.Send("RETR 1")
	c.Expect("+OK *")
	if got := multiline(t, c); got != second+".\r\n" {
		t.Errorf("RETR 1 %q", got)
	}
	c.Send("QUIT")
	c.Expect("+OK Bye*")
	c.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 1)

	d := p.Audit.Find(t, "policy.denied")
	wantHosts := []string{"unknown.test", "", "pop.evil.test", "evil.test"}
	if len(d) != len(wantHosts) {
		t.Fatalf("policy.denied events %v, want %d", d, len(wantHosts))
	}
	for i, e := range d {
		if host, _ := e["host"].(string); e["reason"] != "non_provider_host" || host != wantHosts[i] {
			t.Errorf("policy.denied %d: %v, want non_provider_host for %q", i, e, wantHosts[i])
		}
	}
	// One attempt at b (refused TCP, no upstream.connect), one session at a.
	if n := len(p.Audit.Find(t, "upstream.connect")); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
	if a := p.Audit.Find(t, "auth"); len(a) != 1 || a[0]["user"] != "alice@a.test" || a[0]["result"] != "ok" {
		t.Errorf("auth events %v", a)
	}
	p.Audit.NoSecret(t, password)
}
