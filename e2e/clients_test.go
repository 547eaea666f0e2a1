//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The real clients. Each wrapper runs one program over the step's route:
// plaintext to a mailproxy listener, or implicit TLS with the suite's CA
// on a direct (control) route. Passwords go through files or the
// environment, never the command line.

// netrcFor names the curl netrc of a user ("wrong" is alice with the
// wrong password).
func netrcFor(u user) string {
	switch {
	case u.pass == wrongPassword:
		return "wrong"
	case u.name == bob.name:
		return "bob"
	}
	return "alice"
}

// curl runs curl with the URL path on the step's route.
func (s *step) curl(u user, path string, extra ...string) *result {
	s.t.Helper()
	scheme := s.r.proto
	argv := []string{"curl", "-sS", "--max-time", "120", "--netrc-file", s.e.netrc[netrcFor(u)]}
	if s.r.direct() {
		scheme += "s"
		argv = append(argv, "--cacert", s.e.prov.caFile)
	}
	argv = append(argv, extra...)
	argv = append(argv, fmt.Sprintf("%s://127.0.0.1:%d/%s", scheme, s.r.port, path))
	return s.run(cmdOpts{}, argv...)
}

var searchRE = regexp.MustCompile(`(?m)^\* SEARCH((?: \d+)*)\r?$`)

// curlSearchUID finds the UID of the message with Message-ID msgid in
// mailbox, or 0.
func (s *step) curlSearchUID(u user, mailbox, msgid string) int {
	s.t.Helper()
	r := s.curl(u, mailbox, "-X", fmt.Sprintf(`UID SEARCH HEADER Message-ID "%s"`, msgid))
	if r.code != 0 {
		s.Fatalf("curl UID SEARCH failed\n%s", r.describe())
	}
	m := searchRE.FindStringSubmatch(string(r.stdout))
	if m == nil {
		s.Fatalf("curl UID SEARCH: no SEARCH response\n%s", r.describe())
	}
	f := strings.Fields(m[1])
	switch len(f) {
	case 0:
		return 0
	case 1:
		uid, _ := strconv.Atoi(f[0])
		return uid
	}
	s.Fatalf("curl UID SEARCH: %d messages have Message-ID %s, want one\n%s", len(f), msgid, r.describe())
	return 0
}

// waitDelivered polls with curl until the message with msgid is in
// mailbox, and returns its UID.
func (s *step) waitDelivered(u user, mailbox, msgid string, timeout time.Duration) int {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if uid := s.curlSearchUID(u, mailbox, msgid); uid != 0 {
			return uid
		}
		if time.Now().After(deadline) {
			s.Fatalf("message %s not in %s's %s after %v", msgid, u.name, mailbox, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// swaks submits the message in file from u to rcpt on the step's route.
// ehlo is the name swaks gives (the suite checks that the provider never
// sees it through mailproxy).
func (s *step) swaks(u user, rcpt, file, ehlo string) *result {
	s.t.Helper()
	argv := []string{"swaks", "--server", fmt.Sprintf("127.0.0.1:%d", s.r.port),
		"--from", u.name, "--to", rcpt, "--ehlo", ehlo,
		"--auth", "--auth-user", u.name, "--auth-hide-password",
		"--suppress-data", "--timeout", "120", "--data", file}
	if s.r.direct() {
		argv = append(argv, "--tls-on-connect", "--tls-ca-path", s.e.prov.caFile, "--tls-verify")
	}
	return s.run(cmdOpts{env: []string{"SWAKS_OPT_auth_password=" + u.pass}}, argv...)
}

// imaplibInfo is what imaplib_fetch.py prints.
type imaplibInfo struct {
	UID     int    `json:"uid"`
	Size    int    `json:"size"`
	Subject string `json:"subject"`
}

// imaplib fetches the message with msgid from mailbox with Python's
// imaplib and returns its bytes and what the script printed.
func (s *step) imaplib(u user, mailbox, msgid string) ([]byte, imaplibInfo) {
	s.t.Helper()
	py, _ := pythonPath()
	script, _ := filepath.Abs("imaplib_fetch.py")
	out := filepath.Join(s.t.TempDir(), "imaplib.eml")
	security := "plain"
	if s.r.direct() {
		security = "tls"
	}
	r := s.run(cmdOpts{env: []string{"E2E_PASSWORD=" + u.pass}},
		py, script, "127.0.0.1", strconv.Itoa(s.r.port), u.name, security, s.e.prov.caFile, mailbox, msgid, out)
	if r.code != 0 {
		s.Fatalf("imaplib failed\n%s", r.describe())
	}
	var info imaplibInfo
	if err := json.Unmarshal(r.stdout, &info); err != nil {
		s.Fatalf("imaplib printed no JSON: %v\n%s", err, r.describe())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		s.Fatalf("imaplib wrote no message: %v", err)
	}
	return b, info
}

// fetchmail retrieves (and, not told to keep them, deletes) every message
// of u's POP3 INBOX, each into a file of its own under a new folder,
// which it returns.
func (s *step) fetchmail(u user) (string, *result) {
	s.t.Helper()
	home := s.t.TempDir()
	if err := os.Chmod(home, 0o700); err != nil {
		s.Fatalf("%v", err)
	}
	inbox := filepath.Join(home, "delivered")
	if err := os.Mkdir(inbox, 0o700); err != nil {
		s.Fatalf("%v", err)
	}
	// fetchmail 6.4 insists on STLS unless told sslproto '' (fetchmail(1):
	// "in practice it is still mandatory"), even when CAPA does not offer
	// it: that is how a user points it at a plaintext local relay.
	security := "sslproto ''"
	if s.r.direct() {
		// fetchmail checks the certificate's DNS names only, not IP SANs.
		security = fmt.Sprintf(`ssl sslcertck sslcertfile "%s" sslcommonname "mail.provider.test"`, s.e.prov.caFile)
	}
	rc := fmt.Sprintf(`poll 127.0.0.1 service %d protocol pop3 auth password timeout 120
  user "%s" there with password "%s" is "root" here
  %s
  fetchall
  mda "cat > %s/msg.$$"
`, s.r.port, u.name, u.pass, security, inbox)
	rcPath := filepath.Join(home, "fetchmailrc")
	if err := os.WriteFile(rcPath, []byte(rc), 0o600); err != nil {
		s.Fatalf("%v", err)
	}
	r := s.run(cmdOpts{env: []string{"FETCHMAILHOME=" + home}},
		"fetchmail", "--nosyslog", "--nodetach", "-f", rcPath, "-v")
	return inbox, r
}

// mbsyncConfig writes an mbsync configuration whose channel "e2e" pairs
// the far mailbox with the maildir folder "box" under near, and returns
// its path.
func (s *step) mbsyncConfig(u user, farBox, near string) string {
	s.t.Helper()
	dir := filepath.Dir(near)
	pass := filepath.Join(dir, "mbsync.pass")
	if err := os.WriteFile(pass, []byte(u.pass), 0o600); err != nil {
		s.Fatalf("%v", err)
	}
	security := "SSLType None\nAuthMechs LOGIN PLAIN"
	if s.r.direct() {
		security = "SSLType IMAPS\nCertificateFile " + s.e.prov.caFile
	}
	cfg := fmt.Sprintf(`IMAPAccount far
Host 127.0.0.1
Port %d
User %s
PassCmd "cat %s"
%s
Timeout 120

IMAPStore far
Account far

MaildirStore near
Path %s/
SubFolders Verbatim

Channel e2e
Far :far:%s
Near :near:box
Create Near
Sync All
Expunge Both
SyncState *
`, s.r.port, u.name, pass, security, near, farBox)
	rc := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(rc, []byte(cfg), 0o600); err != nil {
		s.Fatalf("%v", err)
	}
	return rc
}
