//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFloodFromOneAddress: a program on 127.0.0.1 opens 200 idle
// connections to mailproxy's IMAP listener; an app connecting from
// 127.0.0.2 still fetches its mail from real Dovecot in normal time, and
// the audit log grows by a bounded number of lines, not one per refused
// connection (docs/design.md: admission, refusals before a session).
func TestFloodFromOneAddress(t *testing.T) {
	e := suite.begin(t)
	r := e.via(e.mp, "imap", modeTLS)

	// The app's mail, put there before the flood.
	msg := newMessage(t, alice, alice, "flood", 64<<10)
	s := e.step(t, "curl", r, "upload a message to alice's INBOX before the flood")
	s.must(cmdOpts{}, "curl", "-sS", "--max-time", "60", "--netrc-file", e.netrc["alice"],
		"-T", msg.rawFile, fmt.Sprintf("imap://127.0.0.1:%d/INBOX", r.port))
	uid := s.waitDelivered(alice, "INBOX", msg.msgid, 10*time.Second)
	defer func() {
		s := e.step(t, "curl", r, "delete the message after the flood")
		s.curl(alice, "INBOX", "-X", fmt.Sprintf("UID STORE %d +FLAGS.SILENT (\\Deleted)", uid))
		s.curl(alice, "INBOX", "-X", "EXPUNGE")
	}()

	before := e.mp.audit.size()
	var flood []net.Conn
	defer func() { // before the delete above: it comes from 127.0.0.1 too
		for _, c := range flood {
			c.Close()
		}
	}()
	served := 0
	for range 200 {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(r.port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if strings.HasPrefix(string(buf[:n]), "* OK") {
			served++
		}
	}
	if served != 20 {
		t.Errorf("the flooding address got %d connections served, want max_sessions_per_client (20)", served)
	}

	s = e.step(t, "curl", r, "fetch the message from 127.0.0.2 while 127.0.0.1 floods")
	begin := time.Now()
	res := s.curl(alice, "INBOX;UID="+strconv.Itoa(uid), "--interface", "127.0.0.2")
	if res.code != 0 {
		s.Fatalf("curl during the flood failed\n%s", res.describe())
	}
	if d := time.Since(begin); d > 10*time.Second {
		s.Fatalf("curl took %v during the flood", d)
	}
	if !bytes.Equal(res.stdout, msg.raw) {
		s.Fatalf("the message fetched during the flood differs (%d bytes, want %d)", len(res.stdout), len(msg.raw))
	}
	s.expectUpstream(alice, "ok")

	// The audit: the 20 waiting sessions, one refusal line for the 180
	// refused, the app's session; not one line per refusal.
	events, err := e.mp.audit.events(before)
	if err != nil {
		t.Fatal(err)
	}
	refusalLines := 0
	for _, ev := range events {
		if ev["msg"] == "policy.denied" && ev["conn"] == nil {
			refusalLines++
		}
	}
	if refusalLines > 2 || len(events) > 60 {
		t.Errorf("the flood wrote %d audit lines (%d refusal lines) for 200 connections and one app session", len(events), refusalLines)
	}
}
