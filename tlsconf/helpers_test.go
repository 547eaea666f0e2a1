package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/policy"
)

// pki is a test CA and a server certificate for 127.0.0.1 issued by it.
type pki struct {
	ca     *certs.CA
	caFile string
	dir    string
	ecdsa  tls.Certificate // for 127.0.0.1
	rsa    tls.Certificate // for 127.0.0.1, RSA key
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := certs.NewCA("tlsconf test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{ca: ca, caFile: caFile, dir: dir}
	p.ecdsa = p.issue(t, certs.Leaf{Names: []string{"127.0.0.1"}})
	p.rsa = p.issue(t, certs.Leaf{Names: []string{"127.0.0.1"}, RSA: true})
	return p
}

func (p *pki) issue(t *testing.T, l certs.Leaf) tls.Certificate {
	t.Helper()
	c, err := p.ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// provider returns a provider for 127.0.0.1 that trusts the test CA.
func (p *pki) provider(mods ...func(*policy.Provider)) *policy.Provider {
	pr := &policy.Provider{
		Name:                  "test",
		Hosts:                 []string{"127.0.0.1"},
		TLS:                   policy.TLSPolicy{Roots: p.ca.Pool()},
		AllowPrivateAddresses: true,
	}
	for _, m := range mods {
		m(pr)
	}
	return pr
}

// auditBuf collects audit events.
type auditBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (a *auditBuf) Write(b []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buf.Write(b)
}

func (a *auditBuf) events(t *testing.T) []map[string]any {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(a.buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("bad audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func (a *auditBuf) count(t *testing.T, msg string) int {
	n := 0
	for _, e := range a.events(t) {
		if e["msg"] == msg {
			n++
		}
	}
	return n
}

// dialResult is what one Dial produced.
type dialResult struct {
	up     *Upstream
	err    error
	audit  *auditBuf
	denied map[string]any // the policy.denied event, if any
	tls    map[string]any // the upstream.tls event, if any
}

func dialTest(t *testing.T, p *policy.Provider, proto policy.Proto, sec policy.Security, port int) dialResult {
	t.Helper()
	ab := &auditBuf{}
	d := &Dialer{Timeout: 10 * time.Second}
	ep := policy.Endpoint{Proto: proto, Security: sec, Host: "127.0.0.1", Port: uint16(port)}
	up, err := d.Dial(context.Background(), p, ep, policy.NewAudit(ab, 0).Session("t1", proto))
	r := dialResult{up: up, err: err, audit: ab}
	if up != nil {
		t.Cleanup(func() { up.Close() })
	}
	for _, e := range ab.events(t) {
		switch e["msg"] {
		case policy.EventDenied:
			if r.denied != nil {
				t.Errorf("more than one policy.denied event:\n%s", ab.buf.String())
			}
			r.denied = e
		case policy.EventUpstreamTLS:
			r.tls = e
		}
	}
	return r
}

// wantDenied checks that the dial was refused for reason, with exactly one
// policy.denied event saying so and no upstream.tls event.
func (r dialResult) wantDenied(t *testing.T, reason policy.Reason) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("dial succeeded (%v), want refusal %s", r.tls, reason)
	}
	if !errors.Is(r.err, reason) {
		t.Fatalf("dial error %v, want reason %s", r.err, reason)
	}
	if r.denied == nil || r.denied["reason"] != string(reason) {
		t.Fatalf("policy.denied event = %v, want reason %s", r.denied, reason)
	}
	if r.denied["detail"] == "" || r.denied["host"] == nil {
		t.Errorf("policy.denied event without detail or host: %v", r.denied)
	}
	if r.tls != nil {
		t.Errorf("a refused dial logged upstream.tls: %v", r.tls)
	}
}

func (r dialResult) wantOK(t *testing.T) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("dial: %v", r.err)
	}
	if r.tls == nil {
		t.Fatalf("no upstream.tls event:\n%s", r.audit.buf.String())
	}
	if r.denied != nil {
		t.Fatalf("an accepted dial logged policy.denied: %v", r.denied)
	}
}

// serveTLS runs a Go TLS server on 127.0.0.1 that completes handshakes and
// writes "hello" on each connection. It returns the port.
func serveTLS(t *testing.T, cfg *tls.Config) int {
	t.Helper()
	return serveRaw(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err == nil {
			tc.Write([]byte("hello"))
		}
		tc.Close()
	})
}

// serveRaw runs handle for every connection to a new 127.0.0.1 listener.
func serveRaw(t *testing.T, handle func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// needTool returns the path of a command, skipping the test when it is not
// installed, or failing it when MAILPROXY_REQUIRE_TOOLS is set (as CI does).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("MAILPROXY_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s is required (MAILPROXY_REQUIRE_TOOLS is set) but not installed", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// opensslServer starts `openssl s_server` with args on a free port of
// 127.0.0.1, serving cert, and returns the port once it accepts.
func opensslServer(t *testing.T, p *pki, cert tls.Certificate, args ...string) int {
	t.Helper()
	bin := needTool(t, "openssl")
	certFile, keyFile, err := certs.WritePair(p.dir, "openssl-"+strconv.Itoa(int(time.Now().UnixNano())), cert)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		all := append([]string{"s_server", "-accept", "127.0.0.1:" + strconv.Itoa(port),
			"-cert", certFile, "-key", keyFile, "-quiet", "-naccept", "1"}, args...)
		cmd := exec.Command(bin, all...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Stdin = nil
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-done:
				deadline = time.Time{} // exited: port taken, or bad arguments
				continue
			default:
			}
			// Probing would use up -naccept 1, so watch /proc instead.
			if listening(port) {
				return port
			}
			time.Sleep(20 * time.Millisecond)
		}
		if stderr.Len() > 0 {
			t.Logf("openssl s_server: %s", stderr.String())
		}
	}
	t.Fatal("openssl s_server did not start")
	return 0
}

// listening reports whether something listens on 127.0.0.1:port, from
// /proc/net/tcp, without connecting.
func listening(port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	want := []byte(":" + strconv.FormatInt(int64(port)+0x10000, 16)[1:] + " 00000000:0000 0A")
	want = bytes.ToUpper(want)
	return bytes.Contains(bytes.ToUpper(b), want)
}
