package pop3_test

import (
	"strings"
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/proxy"
)

// TestLimits: an over-long command line or SASL response, the pre-login
// timeout and the session limit each end with an -ERR and a limit event.
func TestLimits(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	small := func(st *proxy.Settings) {
		st.Limits.MaxLine = 1024
		st.Limits.PreauthTimeout = 2 * time.Second
		st.Listen.MaxSessions = 4 // two may wait before login
	}
	p := start(t, pki, prov.endpoint, small)

	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.Send("USER %s", strings.Repeat("u", 2000))
	c.Expect("-ERR [SYS/PERM] too much input before login*")
	c.ExpectClosed(5 * time.Second)

	c = testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.Send("AUTH PLAIN")
	c.Expect("+ ")
	c.Send("%s", strings.Repeat("A", 2000))
	c.Expect("-ERR [SYS/PERM] too much input before login*")
	c.ExpectClosed(5 * time.Second)

	// Two sessions may wait before login (half of max_sessions); the
	// third is turned away.
	p.Audit.WaitFor(t, "session.end", 2)
	c1 := testkit.Dial(t, p.Addr)
	c1.Expect("+OK *")
	c2 := testkit.Dial(t, p.Addr)
	c2.Expect("+OK *")
	c3 := testkit.Dial(t, p.Addr)
	c3.Expect("-ERR [SYS/TEMP] too many connections*")
	c3.ExpectClosed(5 * time.Second)
	// The two silent ones hit the pre-login timeout.
	c1.Expect("-ERR Autologout*")
	c1.ExpectClosed(5 * time.Second)
	c2.Expect("-ERR Autologout*")
	c2.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 4)
	var limits []string
	for _, d := range p.Audit.Find(t, "policy.denied") {
		if d["reason"] == "limit" {
			limits = append(limits, d["detail"].(string))
		}
	}
	if len(limits) != 5 {
		t.Errorf("%d limit events, want 5 (line, SASL line, sessions, two timeouts):\n%s", len(limits), p.Audit.String())
	}
	for _, e := range p.Audit.Find(t, "session.end") {
		if e["error"] == nil {
			t.Errorf("a session cut by a limit ended without an error: %v", e)
		}
	}
}
