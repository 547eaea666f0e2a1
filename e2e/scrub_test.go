//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The signed part of the scrubbing scenario: its own X-Mailer header must
// survive, byte for byte, and so must the signature over it.
const signedPart = "Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 7bit\r\n" +
	"X-Mailer: a header of the signed part, which must stay\r\n" +
	"\r\n" +
	"Hello Bob, this part is signed with PGP/MIME.\r\n" +
	"User-Agent: a body line that looks like a header, which must stay\r\n"

// TestScrubHeaders submits a PGP/MIME signed message with a folded
// User-Agent and an X-Mailer in its top-level headers, and an X-Mailer in
// the signed part's own headers, through mailproxy (default scrub_headers)
// to Postfix, and reads it back through Dovecot: the top-level fields are
// gone, the part and its signature are intact (gpg verifies), and
// session.end counts 2 fields scrubbed. A header block over the limit is
// refused with 552 and audited.
func TestScrubHeaders(t *testing.T) {
	e := suite.begin(t)
	gnupg, err := os.MkdirTemp("", "e2e-gpg-") // short: gpg-agent's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(gnupg, 0o700)
	gpg := func(args ...string) ([]byte, error) {
		cmd := exec.Command("gpg", append([]string{"--homedir", gnupg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", gnupg, "--kill", "all").Run()
		os.RemoveAll(gnupg)
	})
	if out, err := gpg("--quick-gen-key", "E2E Alice <"+alice.name+">", "ed25519", "sign", "1d"); err != nil {
		t.Fatalf("gpg --quick-gen-key: %v\n%s", err, out)
	}
	work := t.TempDir()
	partFile := filepath.Join(work, "part")
	if err := os.WriteFile(partFile, []byte(signedPart), 0o644); err != nil {
		t.Fatal(err)
	}
	sig, err := gpg("--armor", "--detach-sign", "--local-user", alice.name, "--output", "-", partFile)
	if err != nil || !bytes.Contains(sig, []byte("BEGIN PGP SIGNATURE")) {
		t.Fatalf("gpg --detach-sign: %v\n%s", err, sig)
	}
	sigCRLF := strings.ReplaceAll(strings.TrimRight(string(sig), "\n"), "\n", "\r\n")

	id := fmt.Sprintf("<scrub-%d-%08x@e2e.provider.test>", time.Now().UnixNano(), rand.Uint32())
	const boundary = "e2e-signed-4c1d"
	msg := "From: Alice <" + alice.name + ">\r\n" +
		"To: Bob <" + bob.name + ">\r\n" +
		"Subject: no app fingerprint\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: " + id + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0)\r\n" +
		"  Gecko/20100101 Thunderbird/128.3.0\r\n" +
		"X-Mailer: E2E Mailer 9.9 (Windows 11)\r\n" +
		"Content-Type: multipart/signed; micalg=pgp-sha512; protocol=\"application/pgp-signature\";\r\n" +
		" boundary=\"" + boundary + "\"\r\n" +
		"\r\n" +
		"--" + boundary + "\r\n" +
		signedPart +
		"\r\n--" + boundary + "\r\n" +
		"Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n" +
		"\r\n" +
		sigCRLF + "\r\n" +
		"\r\n--" + boundary + "--\r\n"
	msgFile := filepath.Join(work, "signed.eml")
	// swaks adds the last CRLF before its ".".
	if err := os.WriteFile(msgFile, []byte(strings.TrimSuffix(msg, "\r\n")), 0o644); err != nil {
		t.Fatal(err)
	}

	s := e.step(t, "swaks", e.via(e.mp, "smtp", modeTLS), "submit a signed message with User-Agent and X-Mailer")
	if res := s.swaks(alice, bob.name, msgFile, appEHLO); res.code != 0 {
		s.Fatalf("swaks failed\n%s", res.describe())
	}
	s.expectAudit("session.end", map[string]string{"messages": "1", "scrubbed": "2"})

	s = e.step(t, "imaplib", e.via(e.mp, "imap", modeTLS), "read the message back from bob's INBOX")
	s.waitDelivered(bob, "INBOX", id, 30*time.Second)
	got, _ := s.imaplib(bob, "INBOX", id)
	head, body, ok := bytes.Cut(got, []byte("\r\n\r\n"))
	if !ok {
		s.Fatalf("the message read back has no header block end:\n%q", got)
	}
	if m := regexp.MustCompile(`(?im)^(user-agent|x-mailer)\s*:`).Find(head); m != nil || bytes.Contains(head, []byte("Gecko")) {
		s.Errorf("the top-level header block still names the app (%q):\n%s", m, head)
	}
	for _, want := range []string{"Message-ID: " + id, "Content-Type: multipart/signed", " boundary=\"" + boundary + "\""} {
		if !bytes.Contains(head, []byte(want)) {
			s.Errorf("the header block lost %q:\n%s", want, head)
		}
	}
	// The signed part as received: between the first boundary line and the
	// CRLF before the next (RFC 3156 §5).
	_, rest, _ := bytes.Cut(body, []byte("--"+boundary+"\r\n"))
	part, rest, _ := bytes.Cut(rest, []byte("\r\n--"+boundary+"\r\n"))
	if string(part) != signedPart {
		s.Fatalf("the signed part changed:\n%q\nwant\n%q", part, signedPart)
	}
	_, sigRest, _ := bytes.Cut(rest, []byte("\r\n\r\n"))
	gotSig, _, _ := bytes.Cut(sigRest, []byte("\r\n--"+boundary+"--"))
	gotPart, gotSigFile := filepath.Join(work, "got-part"), filepath.Join(work, "got-sig.asc")
	os.WriteFile(gotPart, part, 0o644)
	os.WriteFile(gotSigFile, gotSig, 0o644)
	if out, err := gpg("--verify", gotSigFile, gotPart); err != nil || !strings.Contains(string(out), "Good signature") {
		s.Fatalf("gpg --verify of the part read back failed: %v\n%s", err, out)
	}

	// A header block over max_header_block (256 KiB by default): 552,
	// audited, not delivered.
	bigID := fmt.Sprintf("<scrub-big-%d@e2e.provider.test>", time.Now().UnixNano())
	var big strings.Builder
	big.WriteString("From: Alice <" + alice.name + ">\r\nTo: Bob <" + bob.name + ">\r\nSubject: too many headers\r\nMessage-ID: " + bigID + "\r\n")
	for big.Len() < 300<<10 {
		big.WriteString("X-Filler: " + strings.Repeat("f", 900) + "\r\n")
	}
	big.WriteString("X-Mailer: E2E Mailer 9.9\r\n\r\nbody")
	bigFile := filepath.Join(work, "big.eml")
	if err := os.WriteFile(bigFile, []byte(big.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s = e.step(t, "swaks", e.via(e.mp, "smtp", modeTLS), "submit a message whose header block is over the limit")
	res := s.swaks(alice, bob.name, bigFile, appEHLO)
	if res.code == 0 || !strings.Contains(string(res.stdout)+string(res.stderr), "552 5.3.4") {
		s.Fatalf("swaks: want a 552 5.3.4 refusal\n%s", res.describe())
	}
	s.expectAudit("policy.denied", map[string]string{"reason": "limit"})
	s = e.step(t, "curl", e.via(e.mp, "imap", modeTLS), "the refused message was not delivered")
	time.Sleep(time.Second)
	if uid := s.curlSearchUID(bob, "INBOX", bigID); uid != 0 {
		s.Fatalf("the refused message reached bob's INBOX (uid %d)", uid)
	}
}
