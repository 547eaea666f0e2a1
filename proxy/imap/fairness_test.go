package imap_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/internal/testkit"
	"mailproxy/proxy"
)

// TestFloodFromOneAddress: a program on 127.0.0.1 opens 200 idle
// connections (and a few from other loopback addresses); an app on
// 127.0.0.2 still logs in and fetches its mail, twice over, while the
// flood holds. The refusals are on record.
func TestFloodFromOneAddress(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps", message)
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) {
		st.Limits.PreauthTimeout = 30 * time.Second
	})
	var mu sync.Mutex
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	attack := func(src string, n int) (greeted int) {
		for range n {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			k, _ := c.Read(buf)
			if strings.HasPrefix(string(buf[:k]), "* OK") {
				greeted++
			}
			mu.Lock()
			flood = append(flood, c) // held open, silent
			mu.Unlock()
		}
		return greeted
	}
	if got := attack("127.0.0.1", 200); got != 20 {
		t.Errorf("127.0.0.1 got %d of 200 connections served, want max_sessions_per_client (20)", got)
	}
	// Other addresses of the same machine join in, up to the pre-login
	// budget (half of max_sessions): they then take each other's places.
	for _, src := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		t.Logf("%s: %d served", src, attack(src, 20))
	}
	for round := range 2 {
		app := dialFrom(t, "127.0.0.2", p.Addr)
		app.Expect("* OK *")
		app.SendRaw("a1 LOGIN alice {" + itoa(len(password)) + "+}\r\n" + password + "\r\na2 SELECT INBOX\r\na3 FETCH 1 BODY[]\r\n")
		app.Expect("a1 OK *")
		app.ExpectUntil("a2 OK *")
		if lines := app.ExpectUntil("a3 *"); !strings.HasPrefix(lines[len(lines)-1], "a3 OK") {
			t.Fatalf("round %d: the app's FETCH during the flood: %q", round, lines[len(lines)-1])
		}
		// The app stays logged in (an IDLE, say) while the next round
		// connects: logged-in sessions are never closed to make room.
		defer app.C.Close()
	}
	// Refusals before a session starts are aggregated per client and kind:
	// the first is written at once, the rest counted until the interval
	// ends (Flush ends it now).
	p.Listener.Audit.Flush()
	refused, lines, evictions := 0, 0, 0
	for _, d := range p.Audit.Find(t, "policy.denied") {
		detail := d["detail"].(string)
		switch {
		case strings.Contains(detail, "to make room"):
			evictions++
		case d["conn"] == nil:
			lines++
			refused++
			if n, ok := d["count"].(float64); ok {
				refused += int(n) - 1 // the count event stands for count refusals
			}
		}
	}
	if refused < 180 {
		t.Errorf("%d refusals on record, want at least the 180 over the per-client limit", refused)
	}
	// Two lines at most per client and kind: four clients, one kind each
	// (a limit).
	if lines > 8 {
		t.Errorf("%d audit lines for %d refusals, want at most 8", lines, refused)
	}
	if evictions == 0 {
		t.Errorf("no session before login was closed to make room")
	}
	p.Audit.NoSecret(t, password)
}
