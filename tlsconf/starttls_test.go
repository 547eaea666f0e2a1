package tlsconf

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"

	"mailproxy/policy"
)

// starttlsServer plays one protocol's pre-TLS conversation. It answers the
// commands mailproxy sends with canned replies, records them, and does a TLS
// handshake after a successful STARTTLS reply.
type starttlsServer struct {
	greeting string
	// replies maps an upper-cased command (without tag) to its reply; the
	// tag "a"/"b" is prepended for IMAP tagged replies by the test's text.
	replies map[string]string
	// tlsAfter is the command after whose reply TLS starts.
	tlsAfter string

	mu   sync.Mutex
	cmds []string
	tls  bool
}

func (s *starttlsServer) serve(t *testing.T, cert tls.Certificate) int {
	return serveRaw(t, func(c net.Conn) {
		c.Write([]byte(s.greeting))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.TrimRight(line, "\r\n")
			s.mu.Lock()
			s.cmds = append(s.cmds, cmd)
			s.mu.Unlock()
			key := strings.ToUpper(cmd)
			if i := strings.IndexByte(key, ' '); i >= 0 && (strings.HasPrefix(key, "A ") || strings.HasPrefix(key, "B ")) {
				key = key[i+1:]
			}
			if strings.HasPrefix(key, "EHLO ") {
				key = "EHLO"
			}
			reply, ok := s.replies[key]
			if !ok {
				c.Write([]byte("unexpected\r\n"))
				return
			}
			c.Write([]byte(reply))
			if key == s.tlsAfter && s.tlsAfter != "" {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				if tc.Handshake() == nil {
					s.mu.Lock()
					s.tls = true
					s.mu.Unlock()
					tc.Write([]byte("secure\r\n"))
				}
				return
			}
		}
	})
}

func TestSTARTTLS(t *testing.T) {
	p := newPKI(t)
	imapCaps := "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na OK done\r\n"
	imapNoTLS := "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na OK done\r\n"
	popCaps := "+OK\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n.\r\n"
	popNoTLS := "+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n"
	ehlo := "250-mail.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
	ehloNoTLS := "250-mail.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"

	cases := []struct {
		name   string
		proto  policy.Proto
		srv    *starttlsServer
		reason policy.Reason // "" = success
		cmds   []string      // what mailproxy must have sent, in order
	}{
		// IMAP
		{"imap ok", policy.IMAP, &starttlsServer{greeting: "* OK ready\r\n",
			replies: map[string]string{"CAPABILITY": imapCaps, "STARTTLS": "b OK begin TLS\r\n"}, tlsAfter: "STARTTLS"},
			"", []string{"a CAPABILITY", "b STARTTLS"}},
		{"imap ok caps in greeting", policy.IMAP, &starttlsServer{greeting: "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
			replies: map[string]string{"STARTTLS": "b OK begin TLS\r\n"}, tlsAfter: "STARTTLS"},
			"", []string{"b STARTTLS"}},
		{"imap missing", policy.IMAP, &starttlsServer{greeting: "* OK ready\r\n",
			replies: map[string]string{"CAPABILITY": imapNoTLS}}, policy.ReasonSTARTTLS, []string{"a CAPABILITY"}},
		{"imap refused", policy.IMAP, &starttlsServer{greeting: "* OK ready\r\n",
			replies: map[string]string{"CAPABILITY": imapCaps, "STARTTLS": "b NO not now\r\n"}}, policy.ReasonSTARTTLS, nil},
		{"imap injected", policy.IMAP, &starttlsServer{greeting: "* OK ready\r\n",
			replies: map[string]string{"CAPABILITY": imapCaps, "STARTTLS": "b OK begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n"}},
			policy.ReasonSTARTTLS, nil},
		{"imap preauth", policy.IMAP, &starttlsServer{greeting: "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in\r\n"},
			policy.ReasonSTARTTLS, []string{}},
		// POP3
		{"pop3 ok", policy.POP3, &starttlsServer{greeting: "+OK POP3 ready\r\n",
			replies: map[string]string{"CAPA": popCaps, "STLS": "+OK begin TLS\r\n"}, tlsAfter: "STLS"},
			"", []string{"CAPA", "STLS"}},
		{"pop3 missing", policy.POP3, &starttlsServer{greeting: "+OK POP3 ready\r\n",
			replies: map[string]string{"CAPA": popNoTLS}}, policy.ReasonSTARTTLS, []string{"CAPA"}},
		{"pop3 no capa", policy.POP3, &starttlsServer{greeting: "+OK POP3 ready\r\n",
			replies: map[string]string{"CAPA": "-ERR unknown command\r\n"}}, policy.ReasonSTARTTLS, []string{"CAPA"}},
		{"pop3 refused", policy.POP3, &starttlsServer{greeting: "+OK POP3 ready\r\n",
			replies: map[string]string{"CAPA": popCaps, "STLS": "-ERR [SYS/TEMP] no TLS today\r\n"}}, policy.ReasonSTARTTLS, nil},
		{"pop3 injected", policy.POP3, &starttlsServer{greeting: "+OK POP3 ready\r\n",
			replies: map[string]string{"CAPA": popCaps, "STLS": "+OK begin TLS\r\n+OK injected\r\n"}}, policy.ReasonSTARTTLS, nil},
		// SMTP
		{"smtp ok", policy.SMTP, &starttlsServer{greeting: "220-mail.test ESMTP\r\n220 ready\r\n",
			replies: map[string]string{"EHLO": ehlo, "STARTTLS": "220 2.0.0 go ahead\r\n"}, tlsAfter: "STARTTLS"},
			"", []string{"EHLO localhost", "STARTTLS"}},
		{"smtp missing", policy.SMTP, &starttlsServer{greeting: "220 mail.test ESMTP\r\n",
			replies: map[string]string{"EHLO": ehloNoTLS}}, policy.ReasonSTARTTLS, []string{"EHLO localhost"}},
		{"smtp refused", policy.SMTP, &starttlsServer{greeting: "220 mail.test ESMTP\r\n",
			replies: map[string]string{"EHLO": ehlo, "STARTTLS": "454 4.7.0 TLS not available\r\n"}}, policy.ReasonSTARTTLS, nil},
		{"smtp injected", policy.SMTP, &starttlsServer{greeting: "220 mail.test ESMTP\r\n",
			replies: map[string]string{"EHLO": ehlo, "STARTTLS": "220 2.0.0 go ahead\r\n250 injected\r\n"}}, policy.ReasonSTARTTLS, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			port := c.srv.serve(t, p.ecdsa)
			r := dialTest(t, p.provider(), c.proto, policy.STARTTLS, port)
			if c.reason != "" {
				r.wantDenied(t, c.reason)
			} else {
				r.wantOK(t)
				if !r.up.AfterSTARTTLS {
					t.Error("AfterSTARTTLS not set")
				}
				line, err := bufio.NewReader(r.up).ReadString('\n')
				if err != nil || line != "secure\r\n" {
					t.Errorf("first line after TLS = %q, %v", line, err)
				}
			}
			c.srv.mu.Lock()
			defer c.srv.mu.Unlock()
			if c.reason != "" && c.srv.tls {
				t.Error("a TLS session was established after a refusal")
			}
			if c.cmds != nil && strings.Join(c.srv.cmds, "|") != strings.Join(c.cmds, "|") {
				t.Errorf("server received %q, want %q", c.srv.cmds, c.cmds)
			}
		})
	}
}
