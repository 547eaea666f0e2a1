//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// appEHLO is the name the app gives in EHLO. The provider must never see
// it through mailproxy (docs/design.md, guarantee 6).
const appEHLO = "e2e-app-laptop-fingerprint.invalid"

// TestRoundTrip: swaks submits a message with a UTF-8 subject and a 5 MB
// attachment; curl (IMAP) and Python's imaplib read it back byte for
// byte; curl (POP3) retrieves it and fetchmail retrieves and deletes it.
// The direct run is the control: the same clients straight to the
// provider over TLS.
func TestRoundTrip(t *testing.T) {
	e := suite.begin(t)
	t.Run("direct", func(t *testing.T) {
		roundTrip(t, e, e.direct("smtp"), e.direct("imap"), e.direct("imap"), e.direct("pop3"))
	})
	t.Run("mailproxy", func(t *testing.T) {
		roundTrip(t, e, e.via(e.mp, "smtp", modeTLS), e.via(e.mp, "imap", modeSTARTTLS),
			e.via(e.mp, "imap", modeTLS), e.via(e.mp, "pop3", modeSTARTTLS))
	})
}

func roundTrip(t *testing.T, e *env, smtp, imapCurl, imapPy, pop3 route) {
	msg := newMessage(t, alice, bob, "roundtrip", 5<<20)

	s := e.step(t, "swaks", smtp, "submit a 5 MB message with a UTF-8 subject from alice to bob")
	if r := s.swaks(alice, bob.name, msg.file, appEHLO); r.code != 0 {
		s.Fatalf("swaks failed\n%s", r.describe())
	}
	if !smtp.direct() {
		s.expectAudit("upstream.tls", map[string]string{"tls_version": "TLS1.3", "verified": "true"})
		s.expectAudit("auth", map[string]string{"user": alice.name, "result": "ok"})
	}

	s = e.step(t, "curl", imapCurl, "find the message by Message-ID and fetch it")
	uid := s.waitDelivered(bob, "INBOX", msg.msgid, 60*time.Second)
	r := s.curl(bob, "INBOX;UID="+strconv.Itoa(uid))
	if r.code != 0 {
		s.Fatalf("curl fetch failed\n%s", r.describe())
	}
	trace := s.checkDelivered("the message fetched with curl", r.stdout, msg.raw)
	fetched := r.stdout
	if strings.Contains(trace, appEHLO) == !smtp.direct() {
		if smtp.direct() {
			s.Fatalf("control: the app's EHLO name %q should be in the provider's Received field:\n%s", appEHLO, trace)
		}
		s.Fatalf("PRIVACY: the provider saw the app's EHLO name %q (Received field):\n%s", appEHLO, trace)
	}

	s = e.step(t, "imaplib", imapPy, "fetch the same message and decode its subject")
	b, info := s.imaplib(bob, "INBOX", msg.msgid)
	if !bytes.Equal(b, fetched) {
		s.Fatalf("imaplib's copy differs from curl's: %s", firstDifference(b, msg.raw))
	}
	if info.Subject != msg.subject {
		s.Fatalf("decoded subject %q, want %q", info.Subject, msg.subject)
	}

	if !pop3.direct() {
	}
	s = e.step(t, "curl", pop3, "find the message with LIST and TOP, retrieve it with RETR")
	n := s.pop3Find(bob, msg, len(fetched))
	r = s.curl(bob, strconv.Itoa(n))
	if r.code != 0 {
		s.Fatalf("curl RETR %d failed\n%s", n, r.describe())
	}
	if !bytes.Equal(r.stdout, fetched) {
		s.Fatalf("RETR %d differs from the IMAP copy: %s", n, firstDifference(r.stdout, msg.raw))
	}

	s = e.step(t, "fetchmail", pop3, "retrieve and delete every message in bob's INBOX")
	dir, r := s.fetchmail(bob)
	if r.code != 0 {
		s.Fatalf("fetchmail failed\n%s", r.describe())
	}
	got := s.findFile(dir, []byte(msg.msgid))
	if !bytes.HasSuffix(lf(got), lf(msg.raw)) {
		s.Fatalf("fetchmail's copy is not the message as sent: %s", firstDifference(lf(got), lf(msg.raw)))
	}

	s = e.step(t, "curl", pop3, "check that the message is gone")
	if n := s.pop3Find(bob, msg, -1); n != 0 {
		s.Fatalf("message %s is still there (POP3 message %d) after fetchmail", msg.msgid, n)
	}
	s = e.step(t, "curl", imapCurl, "check that the message is gone")
	if uid := s.curlSearchUID(bob, "INBOX", msg.msgid); uid != 0 {
		s.Fatalf("message %s is still in INBOX (UID %d) after fetchmail deleted it over POP3", msg.msgid, uid)
	}
}

var listRE = regexp.MustCompile(`(?m)^(\d+) (\d+)\r?$`)

// pop3Find returns the number of msg in u's POP3 INBOX, or 0. It lists
// the sizes and asks TOP n 0 of each message of size (any size if size is
// -1) for its Message-ID.
func (s *step) pop3Find(u user, msg *message, size int) int {
	s.t.Helper()
	r := s.curl(u, "")
	if r.code != 0 {
		s.Fatalf("curl LIST failed\n%s", r.describe())
	}
	for _, m := range listRE.FindAllStringSubmatch(string(r.stdout), -1) {
		if size >= 0 && m[2] != strconv.Itoa(size) {
			continue
		}
		top := s.curl(u, "", "-X", "TOP "+m[1]+" 0")
		if top.code != 0 {
			s.Fatalf("curl TOP %s 0 failed\n%s", m[1], top.describe())
		}
		if bytes.Contains(top.stdout, []byte("Message-ID: "+msg.msgid)) {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	if size >= 0 {
		s.Fatalf("no message of %d bytes with Message-ID %s in the POP3 LIST:\n%s", size, msg.msgid, lastLines(string(r.stdout), 20))
	}
	return 0
}

// findFile returns the content of the one file under dir holding needle.
func (s *step) findFile(dir string, needle []byte) []byte {
	s.t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		s.Fatalf("%v", err)
	}
	var found []byte
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			s.Fatalf("%v", err)
		}
		if bytes.Contains(b, needle) {
			if found != nil {
				s.Fatalf("two delivered files hold %s", needle)
			}
			found = b
		}
	}
	if found == nil {
		s.Fatalf("none of the %d delivered files holds %s", len(ents), needle)
	}
	return found
}
