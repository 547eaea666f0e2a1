package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
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

// dialResult is what one Dial produced.
type dialResult struct {
	up     *Upstream
	err    error
	audit  *testkit.Audit
	denied map[string]any // the policy.denied event, if any
	tls    map[string]any // the upstream.tls event, if any
}

func dialTest(t *testing.T, p *policy.Provider, proto policy.Proto, sec policy.Security, port int) dialResult {
	t.Helper()
	ab := &testkit.Audit{}
	d := &Dialer{Timeout: 10 * time.Second}
	ep := policy.Endpoint{Proto: proto, Security: sec, Host: "127.0.0.1", Port: uint16(port)}
	up, err := d.Dial(context.Background(), p, ep, policy.NewAudit(ab, 0).Session("t1", proto))
	r := dialResult{up: up, err: err, audit: ab}
	if up != nil {
		t.Cleanup(func() { up.Close() })
	}
	for _, e := range ab.Events(t) {
		switch e["msg"] {
		case policy.EventDenied:
			if r.denied != nil {
				t.Errorf("more than one policy.denied event:\n%s", ab.String())
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
		t.Fatalf("no upstream.tls event:\n%s", r.audit.String())
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
	testkit.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		handle(c)
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// opensslServer starts `openssl s_server` with args on a free port of
// 127.0.0.1, serving cert, and returns the port once it accepts.
func opensslServer(t *testing.T, p *pki, cert tls.Certificate, args ...string) int {
	t.Helper()
	bin := testkit.NeedTool(t, "openssl")
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
