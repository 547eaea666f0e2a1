package proxy_test

// Tests of the session core across the three fronts: pre-login bounds
// under floods, no provider connection before login, input hygiene, and
// the rule that every refusal leaves a record.

import (
	"bufio"
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
func countingProvider(t *testing.T) (string, *atomic.Int32) {
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
