package smtp_test

import (
	"slices"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
)

// A whole session through a SOCKS5 proxy with isolate: the account
// reaches the dialer, each account has SOCKS credentials of its own (the
// same for each of its connections), and a SOCKS failure reaches the app
// and session.end as a clear text.
func TestSessionThroughSOCKS(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	socks := testkit.NewSOCKS5(t, nil)
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) {
		st.Listen.Provider.Via = &policy.Via{Addr: socks.Addr, RemoteDNS: true, Isolate: true}
	})
	for _, u := range []string{user, "mallory@example.test", user} {
		c := testkit.Dial(t, p.Addr)
		greet(c, "pc")
		c.Send("AUTH PLAIN %s", b64("\x00"+u+"\x00"+password))
		c.Expect("*")
		quit(c)
	}
	reqs := socks.Requests()
	if len(reqs) != 3 {
		t.Fatalf("the proxy got %d requests, want 3", len(reqs))
	}
	cred := func(i int) string { return reqs[i].User + "/" + reqs[i].Pass }
	if cred(0) != cred(2) || cred(0) == cred(1) || reqs[0].User == "" {
		t.Errorf("SOCKS credentials %q, want one pair per account", []string{cred(0), cred(1), cred(2)})
	}
	for _, r := range reqs {
		if strings.Contains(r.User+r.Pass, "mallory") || strings.Contains(r.User+r.Pass, password) {
			t.Errorf("SOCKS credentials %q/%q carry the account or its password", r.User, r.Pass)
		}
	}
	ev := p.Audit.Find(t, "upstream.connect")
	if len(ev) != 3 || ev[0]["via"] != socks.Addr.String() {
		t.Errorf("upstream.connect %v, want via %s", ev, socks.Addr)
	}

	socks.SetReply(4)
	c := testkit.Dial(t, p.Addr)
	greet(c, "pc")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("4* *SOCKS proxy * could not connect to 127.0.0.1:*host unreachable*")
	quit(c)
	// The sessions end in any order: the refused one is found by its error.
	ends := p.Audit.WaitFor(t, "session.end", 4)
	if !slices.ContainsFunc(ends, func(e map[string]any) bool {
		s, _ := e["error"].(string)
		return strings.Contains(s, "host unreachable from the proxy") && strings.Contains(s, "(SOCKS reply 4)")
	}) {
		t.Errorf("no session.end with the SOCKS error: %v", ends)
	}
	p.Audit.NoSecret(t, password)
}
