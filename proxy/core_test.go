package proxy_test

// Tests of the session core across the three fronts: pre-login bounds
// under floods, no provider connection before login, input hygiene, and
// the rule that every refusal leaves a record.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/imap"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/proxytest"
	"mailproxy/proxy/smtp"
)

// fronts are the three protocol fronts with what an app says first.
var fronts = []struct {
	proto policy.Proto
	front proxy.Front
	// hello is what a well-behaved app sends before its flood (SMTP wants
	// EHLO before commands count).
	hello string
	// login is a login command carrying user and password.
	login func(user, pass string) string
}{
	{policy.IMAP, imap.Front{}, "", func(u, p string) string { return fmt.Sprintf("a1 LOGIN %q %q\r\n", u, p) }},
	{policy.POP3, pop3.Front{}, "", func(u, p string) string { return fmt.Sprintf("USER %s\r\nPASS %s\r\n", u, p) }},
	{policy.SMTP, smtp.Front{}, "EHLO app\r\n", func(u, p string) string {
		return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+u+"\x00"+p)) + "\r\n"
	}},
}

// countingProvider is a TCP listener that counts the connections it gets
// and closes them: a provider that must never be reached.
func countingProvider(t testing.TB) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), &n
}

func endpoint(proto policy.Proto, addr string) string {
	return map[policy.Proto]string{policy.IMAP: "imaps://", policy.POP3: "pop3s://", policy.SMTP: "smtps://"}[proto] + addr
}

// floods are what a hostile local program sends before login.
var floods = []struct {
	name  string
	imap  bool // IMAP only
	write func(w io.Writer) error
}{
	{"20000 literals", true, func(w io.Writer) error {
		chunk := make([]byte, 1000)
		if _, err := io.WriteString(w, "a LOGIN {1000+}\r\n"); err != nil {
			return err
		}
		for range 20000 {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			if _, err := io.WriteString(w, " {1000+}\r\n"); err != nil {
				return err
			}
		}
		return nil
	}},
	{"one 64 KiB literal after another", true, func(w io.Writer) error {
		chunk := make([]byte, 65536)
		for range 20000 {
			if _, err := io.WriteString(w, "a LOGIN {65536+}\r\n"); err != nil {
				return err
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}},
	{"20000 long lines", false, func(w io.Writer) error {
		line := []byte("x " + strings.Repeat("y", 1900) + "\r\n")
		for range 20000 {
			if _, err := w.Write(line); err != nil {
				return err
			}
		}
		return nil
	}},
	{"pipelined garbage", false, func(w io.Writer) error {
		junk := []byte("\x00\xff{12}\r\n(((\"\\\r\nNOOP\r\n\x1b[2J\r\n")
		for range 20000 {
			if _, err := w.Write(junk); err != nil {
				return err
			}
		}
		return nil
	}},
}

// TestPreloginFloodIsBounded: whatever an app sends before login, the
// session ends with a limit on record, no provider is contacted, and the
// process's heap stays small (before the session core, one IMAP
// connection grew it to 1.58 GB).
func TestPreloginFloodIsBounded(t *testing.T) {
	const conns = 4
	// The ceiling: each session may hold max_prelogin twice (as read and
	// as parsed) plus its buffers; 4 MiB leaves room for the test's own
	// goroutines and the runtime.
	const ceiling = 4 << 20
	for _, fr := range fronts {
		for _, fl := range floods {
			if fl.imap && fr.proto != policy.IMAP {
				continue
			}
			t.Run(string(fr.proto)+"/"+fl.name, func(t *testing.T) {
				addr, dialled := countingProvider(t)
				pki := testkit.NewPKI(t)
				p := proxytest.StartProxy(t, fr.front, fr.proto, proxytest.Provider(pki, "example", endpoint(fr.proto, addr)), nil)

				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				var peak atomic.Uint64
				stop := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					var m runtime.MemStats
					for {
						runtime.ReadMemStats(&m)
						if m.HeapAlloc > peak.Load() {
							peak.Store(m.HeapAlloc)
						}
						select {
						case <-stop:
							return
						case <-time.After(2 * time.Millisecond):
						}
					}
				}()
				var wg sync.WaitGroup
				for range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
						if err != nil {
							return
						}
						defer c.Close()
						c.SetDeadline(time.Now().Add(20 * time.Second))
						read := make(chan struct{})
						go func() { io.Copy(io.Discard, c); close(read) }() // the app reads its answers
						bw := bufio.NewWriterSize(c, 32<<10)
						io.WriteString(bw, fr.hello)
						if fl.write(bw) == nil {
							bw.Flush()
						}
						<-read // until mailproxy closes the connection
					}()
				}
				wg.Wait()
				events := p.Audit.WaitFor(t, "session.end", conns)
				close(stop)
				<-sampled
				if grown := int64(peak.Load()) - int64(before.HeapAlloc); grown > ceiling {
					t.Errorf("the heap grew by %d KiB during the flood, over the %d KiB ceiling", grown>>10, ceiling>>10)
				}
				limits := 0
				for _, d := range p.Audit.Find(t, "policy.denied") {
					if d["reason"] == "limit" {
						limits++
					}
				}
				if limits < conns {
					t.Errorf("%d limit refusals for %d flooding sessions:\n%s", limits, conns, p.Audit.String())
				}
				if len(events) != conns {
					t.Errorf("%d sessions ended, want %d", len(events), conns)
				}
				if n := dialled.Load(); n != 0 {
					t.Errorf("the provider was contacted %d times", n)
				}
			})
		}
	}
}

// refusals are every way a session can be refused before a login
// succeeds, for each front. Each runs in a session of its own on a
// listener built by settings, in front of provider (an endpoint address
// made by the case, or a closed port).
type refusal struct {
	name string
	// provider returns the fake provider's address (TLS from pki), or ""
	// for a port where nothing listens.
	provider func(t *testing.T, pki *testkit.PKI) string
	settings func(st *proxy.Settings)
	// script plays the app; it ends the session itself or leaves it to
	// a limit.
	script func(c *testkit.Conn)
	// reason is the policy.denied reason expected, or "" when the record
	// is auth fail or a session.end error.
	reason string
}

func scriptedProvider(lines ...string) func(t *testing.T, pki *testkit.PKI) string {
	return func(t *testing.T, pki *testkit.PKI) string {
		return testkit.Scripted(t, pki.ServerConfig(), func(c *testkit.Conn) {
			for _, l := range lines {
				if strings.HasPrefix(l, "<") {
					c.Line()
					continue
				}
				c.Send("%s", l)
			}
			c.Line()
		})
	}
}

// Settings the refusal walks share: a LAN listener (no password before
// TLS), and a short pre-login deadline.
var (
	lan   = func(st *proxy.Settings) { st.Listen.Access.Loopback = false }
	short = func(st *proxy.Settings) { st.Limits.PreauthTimeout = 300 * time.Millisecond }
)

func imapRefusals() []refusal {
	login := func(user string) func(c *testkit.Conn) {
		return func(c *testkit.Conn) {
			c.Expect("* OK *")
			c.Send("a1 LOGIN %q secret", user)
			c.Line()
			c.Send("a2 LOGOUT")
			c.ExpectUntil("a2 *")
		}
	}
	return []refusal{
		{"NUL in the user name", nil, nil, func(c *testkit.Conn) {
			c.Expect("* OK *")
			c.SendRaw("a1 LOGIN {6+}\r\nal\x00ice secret\r\n")
			c.Expect("a1 BAD *NUL*")
			c.Send("a2 LOGOUT")
			c.ExpectUntil("a2 *")
		}, "input"},
		{"CR in the password", nil, nil, func(c *testkit.Conn) {
			c.Expect("* OK *")
			c.SendRaw("a1 AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00se\rcret")) + "\r\n")
			c.Expect("a1 BAD *")
			c.Send("a2 LOGOUT")
			c.ExpectUntil("a2 *")
		}, "input"},
		{"provider unreachable", nil, nil, login("alice"), ""},
		{"provider has no mechanism", scriptedProvider("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi"), nil, login("alice"), ""},
		{"wrong password", scriptedProvider("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi", "<", "mp1 NO [AUTHENTICATIONFAILED] no"), nil, login("alice"), ""},
		{"untrusted certificate", func(t *testing.T, _ *testkit.PKI) string {
			return testkit.Scripted(t, testkit.NewPKI(t).ServerConfig(), func(c *testkit.Conn) { c.Line() })
		}, nil, login("alice"), "certificate"},
		{"plaintext login on a LAN listener", nil, lan, login("alice"), "plaintext_auth"},
		{"over-long line", nil, nil, func(c *testkit.Conn) {
			c.Expect("* OK *")
			c.Send("a1 %s", strings.Repeat("x", 9000))
			c.ExpectUntil("* BYE *")
		}, "limit"},
		{"no login in time", nil, short, func(c *testkit.Conn) {
			c.Expect("* OK *")
			c.ExpectUntil("* BYE *")
		}, "limit"},
	}
}

func pop3Refusals() []refusal {
	login := func(c *testkit.Conn) {
		c.Expect("+OK *")
		c.Send("USER alice")
		if l := c.Line(); strings.HasPrefix(l, "+OK") {
			c.Send("PASS secret")
			c.Line()
		}
		c.Send("QUIT")
		c.Expect("+OK *")
	}
	return []refusal{
		{"NUL in the user name", nil, nil, func(c *testkit.Conn) {
			c.Expect("+OK *")
			c.SendRaw("USER al\x00ice\r\n")
			c.Expect("+OK *")
			c.Send("PASS secret")
			c.Expect("-ERR *NUL*")
			c.Send("QUIT")
			c.Expect("+OK *")
		}, "input"},
		{"provider unreachable", nil, nil, login, ""},
		{"provider has no mechanism", scriptedProvider("+OK hi", "<", "+OK", "SASL CRAM-MD5", "."), nil, login, ""},
		{"wrong password", scriptedProvider("+OK hi", "<", "+OK", "SASL PLAIN", ".", "<", "-ERR [AUTH] no"), nil, login, ""},
		{"plaintext login on a LAN listener", nil, lan, login, "plaintext_auth"},
		{"over-long line", nil, nil, func(c *testkit.Conn) {
			c.Expect("+OK *")
			c.Send("USER %s", strings.Repeat("x", 9000))
			c.Expect("-ERR *")
		}, "limit"},
		{"no login in time", nil, short, func(c *testkit.Conn) {
			c.Expect("+OK *")
			c.Expect("-ERR *")
		}, "limit"},
	}
}

func smtpRefusals() []refusal {
	auth := func(pass string) func(c *testkit.Conn) {
		return func(c *testkit.Conn) {
			c.Expect("220 *")
			c.Send("EHLO app")
			c.ExpectUntil("250 *")
			c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+pass)))
			c.Line()
			c.Send("QUIT")
			c.Expect("221 *")
		}
	}
	return []refusal{
		{"LF in the password", nil, nil, auth("se\ncret"), "input"},
		{"provider unreachable", nil, nil, auth("secret"), ""},
		{"plaintext login on a LAN listener", nil, lan, auth("secret"), "plaintext_auth"},
		{"provider has no mechanism", scriptedProvider("220 hi", "<", "250-hi", "250 SIZE 1000"), nil, auth("secret"), ""},
		{"wrong password", scriptedProvider("220 hi", "<", "250-hi", "250 AUTH PLAIN", "<", "535 5.7.8 no"), nil, auth("secret"), ""},
		{"over-long line", nil, nil, func(c *testkit.Conn) {
			c.Expect("220 *")
			c.Send("EHLO %s", strings.Repeat("x", 9000))
			c.ExpectUntil("500 *")
		}, "limit"},
		{"no login in time", nil, short, func(c *testkit.Conn) {
			c.Expect("220 *")
			c.ExpectUntil("421 *")
		}, "limit"},
	}
}

// TestEveryRefusalIsOnRecord walks every refusal path of every front: a
// session that ends without auth result=ok ends with auth result=fail, a
// policy.denied, or a session.end with an error — never in silence.
func TestEveryRefusalIsOnRecord(t *testing.T) {
	walks := map[policy.Proto][]refusal{policy.IMAP: imapRefusals(), policy.POP3: pop3Refusals(), policy.SMTP: smtpRefusals()}
	for _, fr := range fronts {
		for _, rc := range walks[fr.proto] {
			t.Run(string(fr.proto)+"/"+rc.name, func(t *testing.T) {
				pki := testkit.NewPKI(t)
				addr, dialled := countingProvider(t)
				if rc.provider != nil {
					addr = rc.provider(t, pki)
				} else {
					// A closed port: nothing answers there.
					ln, _ := net.Listen("tcp", "127.0.0.1:0")
					if rc.reason == "" {
						addr = ln.Addr().String()
					}
					ln.Close()
				}
				opts := []proxytest.ProxyOptions{}
				if rc.settings != nil {
					opts = append(opts, rc.settings)
				}
				p := proxytest.StartProxy(t, fr.front, fr.proto, proxytest.Provider(pki, "example", endpoint(fr.proto, addr)), nil, opts...)
				c := testkit.Dial(t, p.Addr)
				rc.script(c)
				c.C.Close()
				p.Audit.WaitFor(t, "session.end", 1)
				var ok, fail bool
				for _, a := range p.Audit.Find(t, "auth") {
					ok = ok || a["result"] == "ok"
					fail = fail || a["result"] == "fail"
				}
				denied := p.Audit.Find(t, "policy.denied")
				end := p.Audit.Find(t, "session.end")[0]
				if ok {
					t.Fatalf("a refusal case logged in:\n%s", p.Audit.String())
				}
				if !fail && len(denied) == 0 && end["error"] == nil {
					t.Errorf("the session ended without a record of why:\n%s", p.Audit.String())
				}
				if rc.reason != "" && (len(denied) == 0 || denied[0]["reason"] != rc.reason) {
					t.Errorf("want policy.denied reason %s:\n%s", rc.reason, p.Audit.String())
				}
				if rc.reason == "input" && dialled.Load() != 0 {
					t.Errorf("credentials mailproxy refused reached the provider")
				}
				p.Audit.NoSecret(t, "secret", "se\rcret", "se\ncret")
			})
		}
	}
}

// BenchmarkPreloginSessionMemory reports the heap a pre-login IMAP
// session holds: idle after the greeting, and at its worst, part-way
// through a literal of the largest size max_prelogin lets through.
//
//	go test -run '^$' -bench PreloginSessionMemory -benchtime 1x -count 3 ./proxy/
func BenchmarkPreloginSessionMemory(b *testing.B) {
	const n = 200
	pki := testkit.NewPKI(b)
	addr, _ := countingProvider(b)
	p := proxytest.StartProxy(b, imap.Front{}, policy.IMAP, proxytest.Provider(pki, "example", endpoint(policy.IMAP, addr)), nil,
		func(st *proxy.Settings) {
			st.Listen.MaxSessions, st.Limits.MaxSessionsPerClient, st.Limits.SessionsPerMinutePerClient = 4*n, 2*n, 1e6
		})
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	open := func(send string, extra int) []net.Conn {
		var conns []net.Conn
		for range n {
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				b.Fatal(err)
			}
			br := bufio.NewReader(c)
			if g, _ := br.ReadString('\n'); !strings.HasPrefix(g, "* OK") {
				b.Fatalf("session %d was not served: %q", len(conns), g)
			}
			if send != "" {
				io.WriteString(c, send)
				br.ReadString('\n') // "+ Ready"
				c.Write(make([]byte, extra))
			}
			conns = append(conns, c)
		}
		time.Sleep(200 * time.Millisecond) // let the sessions read what was sent
		return conns
	}
	for range b.N {
		base := heap()
		idle := open("", 0)
		idleHeap := heap()
		// 60,000 bytes announced, half of them sent: the buffer for the
		// whole literal is held.
		full := open("a LOGIN {60000}\r\n", 30000)
		fullHeap := heap()
		b.ReportMetric(float64(idleHeap-base)/n, "B/idle-session")
		b.ReportMetric(float64(fullHeap-idleHeap)/n, "B/mid-literal-session")
		for _, c := range append(idle, full...) {
			c.Close()
		}
	}
}

// TestNoProviderConnectionBeforeLogin: on every front, apps that connect,
// sit idle, ask for capabilities and leave open no connection to the
// provider; one login attempt opens exactly one.
func TestNoProviderConnectionBeforeLogin(t *testing.T) {
	caps := map[policy.Proto]string{policy.IMAP: "a CAPABILITY\r\nb LOGOUT\r\n", policy.POP3: "CAPA\r\nQUIT\r\n", policy.SMTP: "EHLO app\r\nQUIT\r\n"}
	for _, fr := range fronts {
		t.Run(string(fr.proto), func(t *testing.T) {
			pki := testkit.NewPKI(t)
			// A provider that completes the handshake and hangs up: a login
			// fails there, after exactly one connection.
			var dialled atomic.Int32
			addr := testkit.Scripted(t, pki.ServerConfig(), func(c *testkit.Conn) {
				dialled.Add(1)
				c.C.(*tls.Conn).Handshake()
			})
			p := proxytest.StartProxy(t, fr.front, fr.proto, proxytest.Provider(pki, "example", endpoint(fr.proto, addr)), nil)
			for i := range 5 {
				c := testkit.Dial(t, p.Addr)
				c.Line() // the greeting
				time.Sleep(20 * time.Millisecond)
				if i%2 == 0 { // some ask for capabilities, some just leave
					c.SendRaw(caps[fr.proto])
					c.ExpectClosed(5 * time.Second)
				}
				c.C.Close()
			}
			p.Audit.WaitFor(t, "session.end", 5)
			if n := dialled.Load(); n != 0 {
				t.Fatalf("%d provider connections from apps that never logged in", n)
			}
			c := testkit.Dial(t, p.Addr)
			c.Line()
			c.SendRaw(fr.hello + fr.login("alice", "secret"))
			p.Audit.WaitFor(t, "upstream.connect", 1)
			c.C.Close()
			p.Audit.WaitFor(t, "session.end", 6)
			if n := dialled.Load(); n != 1 {
				t.Errorf("one login attempt: %d provider connections, want 1", n)
			}
		})
	}
}

// TestPanicIsContained: a panic in a front's session (forced at
// the start of the login's provider exchange) gives the app the
// protocol's goodbye, writes one parseable session.panic event with the
// stack, and leaves the listener serving.
func TestPanicIsContained(t *testing.T) {
	defer proxy.SetLoginHook(func() { panic("forced by the test") })()
	goodbye := map[policy.Proto]string{
		policy.IMAP: "* BYE [UNAVAILABLE] mailproxy had an internal error*",
		policy.POP3: "-ERR [SYS/TEMP] mailproxy had an internal error*",
		policy.SMTP: "421 4.0.0 *", // go-smtp's own, from its recover
	}
	for _, fr := range fronts {
		t.Run(string(fr.proto), func(t *testing.T) {
			addr, _ := countingProvider(t)
			pki := testkit.NewPKI(t)
			p := proxytest.StartProxy(t, fr.front, fr.proto, proxytest.Provider(pki, "example", endpoint(fr.proto, addr)), nil)
			for range 2 { // the listener goes on after the first
				c := testkit.Dial(t, p.Addr)
				c.Line()
				c.SendRaw(fr.hello + fr.login("alice", "secret"))
				c.ExpectUntil(goodbye[fr.proto])
				c.ExpectClosed(5 * time.Second)
			}
			p.Audit.WaitFor(t, "session.end", 2)
			panics := p.Audit.Find(t, "session.panic") // Find parses every line as JSON
			if len(panics) != 2 {
				t.Fatalf("%d session.panic events, want 2:\n%s", len(panics), p.Audit.String())
			}
			for _, e := range panics {
				if e["level"] != "ERROR" || e["panic"] != "forced by the test" || !strings.Contains(e["stack"].(string), "proxy.onOwnStack") {
					t.Errorf("session.panic event %v", e)
				}
			}
			for _, e := range p.Audit.Find(t, "session.end") {
				if e["error"] != "internal error (please report): forced by the test" {
					t.Errorf("session.end %v", e)
				}
			}
			p.Audit.NoSecret(t, "secret")
		})
	}
}

// TestDialTimeoutFromLimits: a provider that accepts and then stalls the
// TLS handshake is given up after dial_timeout, not a fixed 30 s.
func TestDialTimeoutFromLimits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, c) // reads the ClientHello, answers nothing
	})
	pki := testkit.NewPKI(t)
	p := proxytest.StartProxy(t, fronts[0].front, policy.IMAP, proxytest.Provider(pki, "example", "imaps://"+ln.Addr().String()), nil,
		func(st *proxy.Settings) { st.Limits.DialTimeout = time.Second })
	c := testkit.Dial(t, p.Addr)
	c.Line()
	begin := time.Now()
	c.Send("a1 LOGIN alice secret")
	c.Expect("a1 NO [UNAVAILABLE] *")
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the login waited %v for a stalled provider; dial_timeout is 1s", d)
	}
}

// TestReloadIsAtomic: a reload that cannot be applied whole changes
// nothing (every listener answers as before); one that changes a
// listener's protocol swaps it on the same socket at once, while a session
// that started before goes on with the old protocol.
func TestReloadIsAtomic(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr, _ := countingProvider(t)
	prov := proxytest.Provider(pki, "example", "imaps://"+addr, "pop3s://"+addr, "smtps://"+addr)
	audit := &testkit.Audit{}
	srv := &proxy.Server{Audit: policy.NewAudit(audit, 0), Dialer: nil, Fronts: map[policy.Proto]proxy.Front{}}
	for _, fr := range fronts {
		srv.Fronts[fr.proto] = fr.front
	}
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	a, b := free(), free()
	spec := func(proto policy.Proto, address string) proxy.ListenSpec {
		return proxy.ListenSpec{Proto: proto, Address: address, Provider: prov, Access: policy.Access{Loopback: true}}
	}
	setup := func(ls ...proxy.ListenSpec) proxy.Setup {
		return proxy.Setup{Providers: []*policy.Provider{prov}, Listeners: ls}
	}
	ctx := t.Context()
	if err := srv.Start(ctx, setup(spec(policy.IMAP, a), spec(policy.POP3, b))); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	greeting := func(address string) string {
		c := testkit.Dial(t, address)
		defer c.C.Close()
		return c.Line()
	}
	expect := func(address, prefix string) {
		t.Helper()
		if g := greeting(address); !strings.HasPrefix(g, prefix) {
			t.Errorf("%s greets %q, want %s...", address, g, prefix)
		}
	}
	expect(a, "* OK")
	expect(b, "+OK")

	// Refused: a changes protocol, and a new listener's address is taken.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = srv.Reload(ctx, setup(spec(policy.POP3, a), spec(policy.POP3, b), spec(policy.SMTP, busy.Addr().String())))
	if err == nil {
		t.Fatal("a reload onto a busy address was applied")
	}
	expect(a, "* OK")
	expect(b, "+OK")

	// Applied: a session on a started under IMAP goes on as IMAP while
	// new sessions get POP3, at once.
	old := testkit.Dial(t, a)
	old.Expect("* OK *")
	begin := time.Now()
	if err := srv.Reload(ctx, setup(spec(policy.POP3, a), spec(policy.POP3, b))); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("the reload took %v with a session open", d)
	}
	expect(a, "+OK")
	old.Send("x NOOP")
	old.Expect("x OK *")
	old.Send("y LOGOUT")
	old.ExpectUntil("y OK *")
	starts := 0
	for _, e := range audit.Find(t, "listener.start") {
		if e["address"] == a {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("%d listener.start events for %s, want 2 (IMAP, then POP3)", starts, a)
	}
}

// TestLoginAttemptsPerSession: a session may try MaxLoginAttempts logins;
// the next ends it with a limit on record, on every front, so that one
// connection cannot make the provider check password after password.
func TestLoginAttemptsPerSession(t *testing.T) {
	goodbye := map[policy.Proto]string{policy.IMAP: "* BYE [LIMIT] too many login attempts*", policy.POP3: "-ERR [SYS/PERM] too many login attempts*", policy.SMTP: "421 4.7.0 Too many login attempts*"}
	for _, fr := range fronts {
		t.Run(string(fr.proto), func(t *testing.T) {
			pki := testkit.NewPKI(t)
			var dialled atomic.Int32
			addr := testkit.Scripted(t, pki.ServerConfig(), func(c *testkit.Conn) {
				dialled.Add(1)
				c.C.(*tls.Conn).Handshake() // and hang up: the login fails
			})
			p := proxytest.StartProxy(t, fr.front, fr.proto, proxytest.Provider(pki, "example", endpoint(fr.proto, addr)), nil)
			c := testkit.Dial(t, p.Addr)
			c.Line()
			c.SendRaw(fr.hello)
			for range proxy.MaxLoginAttempts + 1 {
				c.SendRaw(fr.login("alice", "secret"))
			}
			c.ExpectUntil(goodbye[fr.proto])
			c.ExpectClosed(5 * time.Second)
			p.Audit.WaitFor(t, "session.end", 1)
			if n := dialled.Load(); n != proxy.MaxLoginAttempts {
				t.Errorf("%d provider connections, want %d", n, proxy.MaxLoginAttempts)
			}
			limits := 0
			for _, d := range p.Audit.Find(t, "policy.denied") {
				if d["reason"] == "limit" && strings.Contains(d["detail"].(string), "log in more than") {
					limits++
				}
			}
			if limits != 1 {
				t.Errorf("%d limit refusals for the extra login, want 1:\n%s", limits, p.Audit.String())
			}
		})
	}
}
