package smtp_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/internal/testkit"
)

// TestProviderReplyBounded: a provider (over verified TLS) that sends an
// endless EHLO reply, as one line or as continuation lines, is read no
// further than one reply's bound: the app gets a temporary error saying
// so, the refusal is audited, and the provider's writes fail because
// mailproxy closed the connection, long before it sent what it meant to.
func TestProviderReplyBounded(t *testing.T) {
	const flood = 64 << 20 // what the provider would send
	cases := map[string]string{
		"one long line":      strings.Repeat("x", 32<<10),
		"continuation lines": "250-" + strings.Repeat("y", 500) + "\r\n",
	}
	for name, chunk := range cases {
		t.Run(name, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			var sent atomic.Int64
			done := make(chan struct{})
			addr := testkit.Scripted(t, pki.ServerConfig(), func(c *testkit.Conn) {
				defer close(done)
				c.Send("220 big.example ESMTP")
				c.Expect("EHLO localhost")
				if strings.HasPrefix(chunk, "x") {
					c.SendRaw("250-")
				}
				for sent.Load() < flood {
					c.C.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.C.Write([]byte(chunk)); err != nil {
						return
					}
					sent.Add(int64(len(chunk)))
				}
			})
			p := start(t, pki, "smtps://"+addr)
			c := testkit.Dial(t, p.Addr)
			greet(c, "pc")
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
			c.Expect("454 4.4.0 *reply is longer than 65536 bytes*")
			quit(c)
			end := checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "policy.denied", "session.end"})
			d := denials(t, p)
			if d[0]["reason"] != "limit" || d[0]["host"] != "127.0.0.1" {
				t.Errorf("denied event %v, want reason limit at the provider", d[0])
			}
			if e, _ := end["error"].(string); !strings.Contains(e, "longer than 65536 bytes") {
				t.Errorf("session.end error %q", e)
			}
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the provider's writes never failed: mailproxy kept reading")
			}
			if n := sent.Load(); n >= flood {
				t.Errorf("the provider sent all of its %d bytes", n)
			}
		})
	}
}
