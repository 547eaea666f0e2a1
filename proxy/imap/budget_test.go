package imap_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
)

// TestUpstreamByteBudget: what the provider sends before the relay — the
// greeting, the capabilities and the login reply — has one budget of
// 1 MiB in all, however it is cut into responses each under 1 MiB: past
// it the login fails as the provider's fault, and nothing of it reaches
// the app. Just under it, the login goes through.
func TestUpstreamByteBudget(t *testing.T) {
	pki := testkit.NewPKI(t)
	line := "* OK " + strings.Repeat("x", 60000) // 60,005 bytes + CRLF
	literal := func(n int) string {
		return fmt.Sprintf("* 1 FETCH (BODY[] {%d}\r\n%s)\r\n", n, strings.Repeat("y", n))
	}
	for _, tc := range []struct {
		name  string
		caps  string // greeting's; empty: CAPABILITY is asked
		flood string // before the tagged reply (to CAPABILITY if caps is empty)
		ok    bool
	}{
		{"login reply under budget", "IMAP4rev1 AUTH=PLAIN SASL-IR", strings.Repeat(line+"\r\n", 17), true},
		{"login reply lines", "IMAP4rev1 AUTH=PLAIN SASL-IR", strings.Repeat(line+"\r\n", 18), false},
		{"login reply literals", "IMAP4rev1 AUTH=PLAIN SASL-IR", strings.Repeat(literal(400000), 3), false},
		{"capabilities", "", strings.Repeat("* CAPABILITY IMAP4rev1 AUTH=PLAIN X"+strings.Repeat("x", 60000)+"\r\n", 18), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := scripted(t, pki, func(c *testkit.Conn) {
				if tc.caps == "" {
					c.Send("* OK ready")
					c.Expect("mp1 CAPABILITY")
					c.SendRaw(tc.flood)
					c.Send("mp1 OK done")
					c.Line() // the login, whichever
					c.Send("mp2 OK logged in")
				} else {
					c.Send("* OK [CAPABILITY %s] ready", tc.caps)
					c.Expect("mp1 AUTHENTICATE PLAIN *")
					c.SendRaw(tc.flood)
					c.Send("mp1 OK logged in")
				}
				c.Expect("a2 LOGOUT")
				c.Send("* BYE")
				c.Send("a2 OK bye")
			})
			p := start(t, pki, endpoint)
			c := testkit.Dial(t, p.Addr)
			c.Expect("* OK *")
			c.Send("a1 AUTHENTICATE PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+password)))
			got := c.ExpectUntil("a1 *")
			if !tc.ok {
				if len(got) != 1 || !testkit.Match("a1 NO [UNAVAILABLE] *before login are too long*", got[0]) {
					t.Errorf("the app got %d lines, the last %.100q", len(got), got[len(got)-1])
				}
				logout(c)
				end := p.Audit.WaitFor(t, "session.end", 1)
				if e, _ := end[0]["error"].(string); !strings.Contains(e, "too long") {
					t.Errorf("session.end error %q", e)
				}
				return
			}
			if len(got) != 18 || got[17] != "a1 OK logged in" {
				t.Errorf("the app got %d lines, the last %.100q", len(got), got[len(got)-1])
			}
			c.Send("a2 LOGOUT")
			c.ExpectUntil("a2 OK *")
		})
	}
}
