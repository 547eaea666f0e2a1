// Package testkit holds what the tests of every package share: a test PKI,
// a collecting audit sink with assertions, a transcript client that plays
// a legacy app line by line, scripted servers, and the tool lookup. It is
// imported by tests only, and imports nothing of mailproxy's but the
// certificate maker (itself a leaf), so that any package's tests can use it
// (proxy/proxytest adds an in-process listener on top).
package testkit

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/internal/certs"
)

// PKI is a test CA and a server certificate for 127.0.0.1 and localhost.
type PKI struct {
	CA     *certs.CA
	CAFile string
	Dir    string
	Cert   tls.Certificate
}

// NewPKI makes a PKI in a temporary directory.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := certs.NewCA("mailproxy test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, CAFile: caFile, Dir: dir, Cert: cert}
}

// ServerConfig is a TLS server configuration for a fake provider.
func (p *PKI) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}}
}

// Buffer is a bytes.Buffer that goroutines may write while a test reads
// what was written so far.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Audit collects audit events.
type Audit struct{ Buffer }

// Events decodes every event.
func (a *Audit) Events(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(a.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// Find returns the events named msg.
func (a *Audit) Find(t testing.TB, msg string) []map[string]any {
	var out []map[string]any
	for _, e := range a.Events(t) {
		if e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// Sessions returns the event names of each connection, in order, keyed by
// conn id.
func (a *Audit) Sessions(t testing.TB) map[string][]string {
	out := map[string][]string{}
	for _, e := range a.Events(t) {
		if id, ok := e["conn"].(string); ok {
			out[id] = append(out[id], e["msg"].(string))
		}
	}
	return out
}

// WaitFor waits until n events named msg have been written.
func (a *Audit) WaitFor(t testing.TB, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev := a.Find(t, msg)
		if len(ev) >= n {
			return ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d %s events, have %d:\n%s", n, msg, len(ev), a.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NoSecret fails the test if any secret appears in the audit log, as it is
// or in base64 (as AUTH PLAIN would carry it).
func (a *Audit) NoSecret(t testing.TB, secrets ...string) {
	t.Helper()
	log := a.String()
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s))} {
			if strings.Contains(log, form) {
				t.Errorf("the audit log contains a secret (%d bytes)", len(s))
			}
		}
	}
}

// Conn is a transcript client: it plays an app line by line.
type Conn struct {
	t  testing.TB
	C  net.Conn
	BR *bufio.Reader
}

// Dial connects a transcript client.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Conn{t: t, C: c, BR: bufio.NewReader(c)}
}

// Wrap makes a transcript client of an existing connection (after TLS).
func Wrap(t testing.TB, c net.Conn) *Conn {
	return &Conn{t: t, C: c, BR: bufio.NewReader(c)}
}

// Send writes a line with CRLF.
func (c *Conn) Send(format string, args ...any) {
	c.t.Helper()
	c.SendRaw(fmt.Sprintf(format, args...) + "\r\n")
}

// SendRaw writes bytes as they are.
func (c *Conn) SendRaw(s string) {
	c.t.Helper()
	c.C.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.C.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Line reads one line, without CRLF.
func (c *Conn) Line() string {
	c.t.Helper()
	c.C.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.BR.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (partial %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// Expect reads one line and checks it against a glob pattern ('*' matches
// anything, including spaces).
func (c *Conn) Expect(pattern string) string {
	c.t.Helper()
	l := c.Line()
	if !Match(pattern, l) {
		c.t.Fatalf("got %q, want %q", l, pattern)
	}
	return l
}

// ExpectUntil reads lines until one matches pattern and returns all of
// them.
func (c *Conn) ExpectUntil(pattern string) []string {
	c.t.Helper()
	var lines []string
	for i := 0; i < 10000; i++ {
		l := c.Line()
		lines = append(lines, l)
		if Match(pattern, l) {
			return lines
		}
	}
	c.t.Fatalf("no line matched %q", pattern)
	return nil
}

// ExpectClosed checks that the other side closes the connection (after any
// lines) within the timeout, and then closes this side too, as an app does.
func (c *Conn) ExpectClosed(timeout time.Duration) {
	c.t.Helper()
	defer c.C.Close()
	c.C.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, err := c.BR.ReadString('\n')
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatalf("the connection was not closed within %v", timeout)
			}
			return
		}
	}
}

// Match matches a glob pattern where '*' matches any run of characters.
func Match(pattern, s string) bool { return globMatch(pattern, s) }

func globMatch(p, s string) bool {
	parts := strings.Split(p, "*")
	if len(parts) == 1 {
		return p == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// NeedTool returns the path of a command, skipping the test when it is not
// installed, or failing it when MAILPROXY_REQUIRE_TOOLS is set (as CI does).
func NeedTool(t testing.TB, name string) string {
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

// Scripted runs a hand-played server on 127.0.0.1 — a provider that
// misbehaves on cue — and returns its address. cfg nil means plaintext
// (for STARTTLS scripts, which upgrade with tls.Server themselves); else
// implicit TLS. handle gets each connection as a transcript; an expectation
// it fails ends that handler only (the test then fails on what the app
// sees), since t.Fatal must not be called off the test goroutine.
func Scripted(t testing.TB, cfg *tls.Config, handle func(c *Conn)) string {
	t.Helper()
	var ln net.Listener
	var err error
	if cfg != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, func(c net.Conn) {
		defer func() { recover() }()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		handle(Wrap(scriptT{}, c))
	})
	return ln.Addr().String()
}

// Serve runs handle for every connection ln accepts, each in a goroutine
// of its own, and closes the connection after it; the test's cleanup
// closes ln and waits for every handler.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
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
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// scriptT turns a failed expectation in a script into a panic that
// Scripted recovers.
type scriptT struct{ testing.TB }

func (scriptT) Helper()               {}
func (scriptT) Fatalf(string, ...any) { panic("scripted server: unexpected input") }
func (scriptT) Fatal(...any)          { panic("scripted server: unexpected input") }
