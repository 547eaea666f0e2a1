//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// providerRemote is the client address the provider sees for a mode:
// HAProxy labels the STARTTLS hop's connections 192.0.2.25 (provider.sh),
// so that Dovecot does not count them as local and secured.
func providerRemote(mode string) string {
	if mode == modeSTARTTLS {
		return "rip=192.0.2.25"
	}
	return "rip=127.0.0.1"
}

// waitLog waits up to five seconds for a line of l, written during the
// step, that holds every one of parts, and returns it.
func (s *step) waitLog(l *logFile, what string, parts ...string) string {
	s.t.Helper()
	line, ok := l.waitLine(s.mark(l), 5*time.Second, func(line string) bool {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				return false
			}
		}
		return true
	})
	if !ok {
		s.Fatalf("%s: no %s log line holding %q during this step", what, l.name, parts)
	}
	return line
}

// expectUpstream checks the audit trail of a relayed session: mailproxy
// connected to the provider endpoint of the route, accepted TLS 1.3 with
// a verified certificate, and logged in as u with the given result.
func (s *step) expectUpstream(u user, result string) {
	s.t.Helper()
	if s.r.direct() {
		return
	}
	host := "127.0.0.1"
	if s.r.mp.upstreamHost != "" {
		host = s.r.mp.upstreamHost
	}
	connect := map[string]string{"host": host, "addr": host + ":" + strconv.Itoa(s.r.upstreamPort)}
	if s.r.mp.via != "" {
		connect["via"] = s.r.mp.via
	}
	s.expectAudit("upstream.connect", connect)
	s.expectAudit("upstream.tls", map[string]string{"host": host, "tls_version": "TLS1.3", "verified": "true"})
	s.expectAudit("auth", map[string]string{"user": u.name, "result": result})
	s.expectAudit("session.end", nil)
}

// TestUpstreamModes runs each relay against each upstream mode: IMAP,
// POP3 and SMTP, each to the provider's implicit TLS port and to its
// STARTTLS port, and checks what the provider logged about the login.
func TestUpstreamModes(t *testing.T) {
	e := suite.begin(t)
	for _, mode := range modes {
		for _, proto := range []string{"imap", "pop3", "smtp"} {
			t.Run(proto+"/"+mode, func(t *testing.T) { modeScenario(t, e, e.mp, proto, mode) })
		}
	}
}

// modeScenario is one relay in one upstream mode: a login and a simple
// exchange with a real client, checked in the audit trail and in the
// provider's own log.
func modeScenario(t *testing.T, e *env, mp *mailproxy, proto, mode string) {
	r := e.via(mp, proto, mode)
	switch proto {
	case "imap":
		s := e.step(t, "curl", r, "log in and ask STATUS INBOX")
		res := s.curl(alice, "INBOX", "-X", "STATUS INBOX (MESSAGES UIDNEXT)")
		if res.code != 0 || !strings.Contains(string(res.stdout), "* STATUS") {
			s.Fatalf("curl STATUS failed\n%s", res.describe())
		}
		s.expectUpstream(alice, "ok")
		s.waitLog(e.prov.dovecotLog, "Dovecot's login", "imap-login: Info: Login: user=<"+alice.name+">", providerRemote(mode), ", TLS, TLSv1.3")
	case "pop3":
		s := e.step(t, "curl", r, "log in and LIST")
		if res := s.curl(alice, ""); res.code != 0 {
			s.Fatalf("curl LIST failed\n%s", res.describe())
		}
		s.expectUpstream(alice, "ok")
		s.waitLog(e.prov.dovecotLog, "Dovecot's login", "pop3-login: Info: Login: user=<"+alice.name+">", providerRemote(mode), ", TLS, TLSv1.3")
	case "smtp":
		msg := smallMessage(t, alice, bob, "modes-"+mode)
		s := e.step(t, "swaks", r, "submit a message from alice to bob")
		if res := s.swaks(alice, bob.name, msg.file, appEHLO); res.code != 0 {
			s.Fatalf("swaks failed\n%s", res.describe())
		}
		s.expectUpstream(alice, "ok")
		service := map[string]string{modeTLS: "postfix/smtps/smtpd", modeSTARTTLS: "postfix/submission/smtpd"}[mode]
		tlsLine := s.waitLog(e.prov.postfixLog, "Postfix's TLS", service, "TLS connection established", "TLSv1.3")
		s.waitLog(e.prov.postfixLog, "Postfix's SASL login", smtpdPid(tlsLine), "sasl_username="+alice.name)
		s = e.step(t, "curl", e.via(mp, "imap", mode), "find the submitted message in bob's INBOX")
		s.waitDelivered(bob, "INBOX", msg.msgid, 30*time.Second)
	}
}

var smtpdPidRE = regexp.MustCompile(`smtpd\[\d+\]`)

// smtpdPid returns "smtpd[PID]" of a Postfix log line, to find the other
// lines of the same SMTP session.
func smtpdPid(line string) string {
	if m := smtpdPidRE.FindString(line); m != "" {
		return m
	}
	return fmt.Sprintf("(no smtpd pid in %q)", line)
}
