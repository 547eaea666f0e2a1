//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// TestWrongPassword: with a wrong password the real client reports an
// authentication failure, mailproxy audits auth result=fail, and the
// provider's own log shows that the attempt reached it over TLS (for the
// STARTTLS mode, from the HAProxy hop that Dovecot does not trust as
// local, so the login could only have come after STARTTLS).
func TestWrongPassword(t *testing.T) {
	e := suite.begin(t)
	wrong := user{alice.name, wrongPassword}
	for _, mode := range modes {
		t.Run("imap/"+mode, func(t *testing.T) {
			s := e.step(t, "curl", e.via(e.mp, "imap", mode), "log in with a wrong password")
			r := s.curl(wrong, "INBOX", "-X", "NOOP")
			// 67: CURLE_LOGIN_DENIED, "Login denied".
			if r.code != 67 {
				s.Fatalf("curl should report a refused login (exit 67)\n%s", r.describe())
			}
			s.expectUpstream(alice, "fail")
			s.waitLog(e.prov.dovecotLog, "Dovecot's failed login", "imap-login:", "auth failed", "user=<"+alice.name+">", providerRemote(mode), ", TLS, TLSv1.3")
		})
		t.Run("pop3/"+mode, func(t *testing.T) {
			s := e.step(t, "curl", e.via(e.mp, "pop3", mode), "log in with a wrong password")
			r := s.curl(wrong, "")
			if r.code != 67 {
				s.Fatalf("curl should report a refused login (exit 67)\n%s", r.describe())
			}
			s.expectUpstream(alice, "fail")
			s.waitLog(e.prov.dovecotLog, "Dovecot's failed login", "pop3-login:", "auth failed", "user=<"+alice.name+">", providerRemote(mode), ", TLS, TLSv1.3")
		})
		t.Run("smtp/"+mode, func(t *testing.T) {
			msg := smallMessage(t, alice, bob, "wrongpass-"+mode)
			s := e.step(t, "swaks", e.via(e.mp, "smtp", mode), "submit with a wrong password")
			r := s.swaks(wrong, bob.name, msg.file, appEHLO)
			// 28: swaks's "authentication failed".
			if r.code != 28 {
				s.Fatalf("swaks should report a failed authentication (exit 28)\n%s", r.describe())
			}
			s.expectUpstream(alice, "fail")
			fail := s.waitLog(e.prov.postfixLog, "Postfix's failed login", "SASL", "authentication failed")
			s.waitLog(e.prov.postfixLog, "Postfix's TLS for that session", smtpdPid(fail), "TLS connection established", "TLSv1.3")
			s.waitLog(e.prov.dovecotLog, "Dovecot auth's verdict", "auth:", "("+alice.name+",127.0.0.1", "Password mismatch")
		})
	}
}

// TestWrongPasswordImaplib: the same refusal seen by Python's imaplib,
// whose error must name the failure and whose session must not go on.
func TestWrongPasswordImaplib(t *testing.T) {
	e := suite.begin(t)
	s := e.step(t, "imaplib", e.via(e.mp, "imap", modeSTARTTLS), "log in with a wrong password")
	py, _ := pythonPath()
	r := s.run(cmdOpts{env: []string{"E2E_PASSWORD=" + wrongPassword}},
		py, "imaplib_fetch.py", "127.0.0.1", strconv.Itoa(s.r.port), alice.name, "plain", e.prov.caFile, "INBOX", "<none@e2e>", "/dev/null")
	if r.code != 3 || !strings.Contains(string(r.stderr), "AUTHENTICATIONFAILED") {
		s.Fatalf("imaplib should report a refused login ([AUTHENTICATIONFAILED], exit 3)\n%s", r.describe())
	}
	s.expectUpstream(alice, "fail")
}
