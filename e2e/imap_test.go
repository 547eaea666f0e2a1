//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// other returns the other upstream mode.
func other(mode string) string {
	if mode == modeTLS {
		return modeSTARTTLS
	}
	return modeTLS
}

// TestIMAPLargeMessage: curl uploads (APPEND) the 5 MB message with the
// UTF-8 subject through mailproxy; curl and Python's imaplib read it back
// through the other upstream mode, byte-identical. It covers the IMAP
// half of TestRoundTrip with APPEND as the way in.
func TestIMAPLargeMessage(t *testing.T) {
	e := suite.begin(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			msg := newMessage(t, alice, bob, "append-"+mode, 5<<20)
			s := e.step(t, "curl", e.via(e.mp, "imap", mode), "upload (APPEND) the 5 MB message to bob's INBOX")
			// curl's upload takes the file as is; raw ends with CRLF.
			s.must(cmdOpts{}, "curl", "-sS", "--max-time", "120", "--netrc-file", e.netrc["bob"],
				"-T", msg.rawFile, fmt.Sprintf("imap://127.0.0.1:%d/INBOX", s.r.port))
			s.expectUpstream(bob, "ok")

			s = e.step(t, "curl", e.via(e.mp, "imap", other(mode)), "find the message and fetch it")
			uid := s.waitDelivered(bob, "INBOX", msg.msgid, 10*time.Second)
			r := s.curl(bob, "INBOX;UID="+strconv.Itoa(uid))
			if r.code != 0 {
				s.Fatalf("curl fetch failed\n%s", r.describe())
			}
			if !bytes.Equal(r.stdout, msg.raw) {
				s.Fatalf("the fetched message differs from the uploaded one (%d bytes, want %d): %s", len(r.stdout), len(msg.raw), firstDifference(r.stdout, msg.raw))
			}
			s.expectUpstream(bob, "ok")

			s = e.step(t, "imaplib", e.via(e.mp, "imap", mode), "fetch the message and decode its subject")
			b, info := s.imaplib(bob, "INBOX", msg.msgid)
			if !bytes.Equal(b, msg.raw) {
				s.Fatalf("imaplib's copy differs from the uploaded one (%d bytes, want %d): %s", len(b), len(msg.raw), firstDifference(b, msg.raw))
			}
			if info.Subject != msg.subject {
				s.Fatalf("decoded subject %q, want %q", info.Subject, msg.subject)
			}
			s.expectUpstream(bob, "ok")

			s = e.step(t, "curl", e.via(e.mp, "imap", mode), "delete the message")
			if r := s.curl(bob, "INBOX", "-X", fmt.Sprintf(`UID STORE %d +FLAGS.SILENT (\Deleted)`, uid)); r.code != 0 {
				s.Fatalf("curl UID STORE failed\n%s", r.describe())
			}
		})
	}
}

var existsRE = regexp.MustCompile(`^\* (\d+) EXISTS$`)

// TestIMAPIdle: a client idles through mailproxy; a message is submitted
// through mailproxy's SMTP listener; the client sees EXISTS within
// seconds.
func TestIMAPIdle(t *testing.T) {
	e := suite.begin(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			s := e.step(t, "go-imap-transcript", e.via(e.mp, "imap", mode), "log in, SELECT INBOX, IDLE, and wait for the new message")
			c := s.dialIMAP()
			c.login(bob)
			before := 0
			for _, line := range c.ok("SELECT INBOX") {
				if m := existsRE.FindStringSubmatch(line); m != nil {
					before, _ = strconv.Atoi(m[1])
				}
			}
			msg := smallMessage(t, alice, bob, "idle-"+mode)
			var submitted time.Time
			line := c.idleUntil(existsRE, 15*time.Second, func() {
				ss := e.step(t, "swaks", e.via(e.mp, "smtp", mode), "submit a message to bob while he idles")
				if r := ss.swaks(alice, bob.name, msg.file, appEHLO); r.code != 0 {
					ss.Fatalf("swaks failed\n%s", r.describe())
				}
				submitted = time.Now()
			})
			t.Logf("%q arrived %v after the submission", line, time.Since(submitted).Round(time.Millisecond))
			n, _ := strconv.Atoi(existsRE.FindStringSubmatch(line)[1])
			if n <= before {
				c.fatalf("EXISTS %d after the submission, want more than %d", n, before)
			}
			c.logout()
			s.expectUpstream(bob, "ok")
		})
	}
}

var (
	modseqRE        = regexp.MustCompile(`\[HIGHESTMODSEQ (\d+)\]`)
	fetchModseqRE   = regexp.MustCompile(`^\* 1 FETCH \(.*MODSEQ \((\d+)\)`)
	messageIDLineRE = regexp.MustCompile(`(?i)Message-ID: (<[^>]+>)`)
)

// TestIMAPExtensions: after login the provider's extensions pass
// untouched (CONDSTORE, IDLE in the capabilities), and the app's ID is
// answered by mailproxy with "* ID NIL" and never reaches the provider,
// whose Dovecot logs every ID it gets (imap_id_log = *) — not even an ID
// sent after login following a COMPRESS DEFLATE, which mailproxy turns
// into one the provider refuses (deflated, the stream would carry the ID
// past the filter); the app goes on uncompressed. Straight to Dovecot,
// COMPRESS DEFLATE works: the refusal is mailproxy's.
func TestIMAPExtensions(t *testing.T) {
	e := suite.begin(t)
	t.Run("control-id-is-logged", func(t *testing.T) {
		// Straight to Dovecot the same ID is logged: the check below can fail.
		marker := fmt.Sprintf("e2e-control-app-%08x", rand.Uint32())
		s := e.step(t, "go-imap-transcript", e.direct("imap"), "send ID, log in, log out")
		c := s.dialIMAP()
		c.ok(`ID ("name" %s)`, quote(marker))
		c.login(alice)
		c.compress()
		c.ok("NOOP")
		c.logout()
		s.waitLog(e.prov.dovecotLog, "Dovecot's ID log", marker)
	})
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			marker := fmt.Sprintf("e2e-app-%s-%08x", mode, rand.Uint32())
			s := e.step(t, "go-imap-transcript", e.via(e.mp, "imap", mode), "ID before login, then CONDSTORE, COMPRESS refused, ID after login")
			c := s.dialIMAP()
			untagged := c.ok(`ID ("name" %s "version" "9.9" "os" %s)`, quote(marker), quote(marker+"-os"))
			if len(untagged) != 1 || untagged[0] != "* ID NIL" {
				c.fatalf("mailproxy should answer ID itself with * ID NIL, got %q", untagged)
			}
			c.login(alice)
			caps := strings.Join(c.ok("CAPABILITY"), " ")
			for _, want := range []string{"CONDSTORE", "COMPRESS=DEFLATE", "IDLE", "QRESYNC"} {
				if !strings.Contains(caps, " "+want) {
					c.fatalf("the capabilities after login lack %s: %s", want, caps)
				}
			}

			box := fmt.Sprintf("E2E-Ext-%s-%08x", mode, rand.Uint32())
			c.ok("CREATE %s", quote(box))
			msg := smallMessage(t, alice, alice, "ext-"+mode)
			c.appendMessage(box, "", msg.raw)
			var highest int
			for _, line := range c.ok("SELECT %s (CONDSTORE)", quote(box)) {
				if m := modseqRE.FindStringSubmatch(line); m != nil {
					highest, _ = strconv.Atoi(m[1])
				}
			}
			if highest == 0 {
				c.fatalf("SELECT (CONDSTORE) gave no HIGHESTMODSEQ")
			}
			stored := 0
			for _, line := range c.ok(`STORE 1 +FLAGS (\Flagged)`) {
				if m := fetchModseqRE.FindStringSubmatch(line); m != nil {
					stored, _ = strconv.Atoi(m[1])
				}
			}
			if stored <= highest {
				c.fatalf("STORE under CONDSTORE: MODSEQ %d, want above %d", stored, highest)
			}
			changed := c.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)", highest)
			if len(changed) != 1 || !strings.Contains(changed[0], `\Flagged`) {
				c.fatalf("FETCH CHANGEDSINCE %d: want the flagged message, got %q", highest, changed)
			}

			if _, status := c.do("COMPRESS DEFLATE"); strings.HasPrefix(status, "OK") {
				c.fatalf("COMPRESS DEFLATE through mailproxy was accepted: %q", status)
			}
			c.ok("NOOP")
			c.ok(`ID ("name" %s "os" %s)`, quote(marker+"-after-compress"), quote(marker+"-os"))
			body := strings.Join(c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"), "\n")
			if m := messageIDLineRE.FindStringSubmatch(body); m == nil || m[1] != msg.msgid {
				c.fatalf("after the refused COMPRESS, FETCH of the Message-ID gave %q, want %s", body, msg.msgid)
			}
			c.ok("CLOSE")
			c.ok("DELETE %s", quote(box))
			c.logout()
			s.expectUpstream(alice, "ok")
			// Dovecot logs the session's end; by then it logged any ID.
			s.waitLog(e.prov.dovecotLog, "Dovecot's logout", "imap("+alice.name+")", "Disconnected: Logged out")
			if log := s.logSince(e.prov.dovecotLog); strings.Contains(log, marker) {
				s.Fatalf("PRIVACY: the app's ID (%s) reached the provider:\n%s", marker, log)
			}
		})
	}
}
