//go:build e2e

package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProviderIsStrict is the control for the STARTTLS scenarios: straight
// to the provider's STARTTLS ports from 127.0.0.1, without mailproxy,
// every plaintext login is refused before STARTTLS, valid password or
// not. So a login that works through mailproxy in STARTTLS mode proves
// that mailproxy did STARTTLS first. (Dovecot alone would accept it: it
// counts 127.0.0.1 -> 127.0.0.1 as secured; the HAProxy hop in front of
// it is what makes this hold, see provider.sh.)
func TestProviderIsStrict(t *testing.T) {
	e := suite.begin(t)
	plain := func(proto string, port int) route {
		return route{proto: proto, desc: fmt.Sprintf("plaintext straight to the provider's STARTTLS port 127.0.0.1:%d (no mailproxy, control)", port)}
	}
	plainPLAIN := base64.StdEncoding.EncodeToString([]byte("\x00" + alice.name + "\x00" + alice.pass))

	t.Run("imap", func(t *testing.T) {
		s := e.step(t, "go-line-client", plain("imap", e.prov.ports.IMAP), "LOGIN before STARTTLS")
		c := s.dialPlain(e.prov.ports.IMAP)
		greeting := c.expect("* OK")
		for _, want := range []string{"STARTTLS", "LOGINDISABLED"} {
			if !strings.Contains(greeting, want) {
				c.fatalf("the greeting lacks %s", want)
			}
		}
		c.send(fmt.Sprintf("a LOGIN %s %s", quote(alice.name), quote(alice.pass)), "a LOGIN *** ***")
		c.expect("a NO [PRIVACYREQUIRED]")
		c.send("b AUTHENTICATE PLAIN "+plainPLAIN, "b AUTHENTICATE PLAIN ***")
		c.expect("b NO")
		c.send("c LOGOUT", "c LOGOUT")
		s.waitLog(e.prov.dovecotLog, "Dovecot's refusal", "imap-login:", "Plaintext authentication disabled", "rip=192.0.2.25")
	})
	t.Run("pop3", func(t *testing.T) {
		s := e.step(t, "go-line-client", plain("pop3", e.prov.ports.POP3), "USER/PASS before STLS")
		c := s.dialPlain(e.prov.ports.POP3)
		c.expect("+OK")
		c.send("CAPA", "CAPA")
		capa := c.expectUntil(".")
		if !strings.Contains(capa, "STLS") {
			c.fatalf("CAPA lacks STLS")
		}
		c.send("USER "+alice.name, "USER "+alice.name)
		c.expect("-ERR")
		c.send("AUTH PLAIN "+plainPLAIN, "AUTH PLAIN ***")
		c.expect("-ERR")
		c.send("QUIT", "QUIT")
		s.waitLog(e.prov.dovecotLog, "Dovecot's refusal", "pop3-login:", "rip=192.0.2.25")
	})
	t.Run("smtp", func(t *testing.T) {
		s := e.step(t, "go-line-client", plain("smtp", e.prov.ports.Submission), "AUTH before STARTTLS")
		c := s.dialPlain(e.prov.ports.Submission)
		c.expect("220 ")
		c.send("EHLO e2e.invalid", "EHLO e2e.invalid")
		ehlo := c.expectUntil("250 ")
		if !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
			c.fatalf("EHLO before STARTTLS should offer STARTTLS and no AUTH")
		}
		c.send("AUTH PLAIN "+plainPLAIN, "AUTH PLAIN ***")
		c.expect("5")
		c.send("QUIT", "QUIT")
	})
}

// lineConn is a plaintext line client for the provider controls.
type lineConn struct {
	s          *step
	conn       net.Conn
	r          *bufio.Reader
	transcript []string
}

func (s *step) dialPlain(port int) *lineConn {
	s.t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
	if err != nil {
		s.Fatalf("%v", err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return &lineConn{s: s, conn: conn, r: bufio.NewReader(conn)}
}

func (c *lineConn) fatalf(format string, args ...any) {
	c.s.t.Helper()
	c.s.Fatalf("%s\n--- transcript (C: client, S: server) ---\n%s", fmt.Sprintf(format, args...), strings.Join(c.transcript, "\n"))
}

func (c *lineConn) send(line, shown string) {
	c.s.t.Helper()
	c.transcript = append(c.transcript, "C: "+shown)
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.fatalf("writing: %v", err)
	}
}

func (c *lineConn) line() string {
	c.s.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.fatalf("reading: %v", err)
	}
	l = strings.TrimRight(l, "\r\n")
	c.transcript = append(c.transcript, "S: "+l)
	return l
}

// expect reads one line, skipping untagged IMAP lines unless the prefix
// is one, and fails unless it starts with prefix.
func (c *lineConn) expect(prefix string) string {
	c.s.t.Helper()
	for {
		l := c.line()
		if strings.HasPrefix(l, prefix) {
			return l
		}
		if !strings.HasPrefix(l, "* ") {
			c.fatalf("want a line starting %q", prefix)
		}
	}
}

// expectUntil reads lines up to one starting with last, and returns them.
func (c *lineConn) expectUntil(last string) string {
	c.s.t.Helper()
	var lines []string
	for {
		l := c.line()
		lines = append(lines, l)
		if strings.HasPrefix(l, last) {
			return strings.Join(lines, "\n")
		}
	}
}
