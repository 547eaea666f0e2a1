//go:build e2e

package e2e

import (
	"bufio"
	"compress/flate"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// imapConn is a line-by-line IMAP client for the scenarios no packaged
// client drives precisely enough (IDLE, COMPRESS, CONDSTORE, ID). It keeps
// a transcript, with credentials redacted, for failure messages.
type imapConn struct {
	s          *step
	conn       net.Conn
	r          *bufio.Reader
	w          io.Writer
	flush      func() error // non-nil after COMPRESS
	tag        int
	transcript []string
}

// dialIMAP connects over the step's route and reads the greeting.
func (s *step) dialIMAP() *imapConn {
	s.t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.r.port))
	var conn net.Conn
	var err error
	if s.r.direct() {
		pem, rerr := os.ReadFile(s.e.prov.caFile)
		if rerr != nil {
			s.Fatalf("%v", rerr)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
			&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	} else {
		conn, err = net.DialTimeout("tcp", addr, 10*time.Second)
	}
	if err != nil {
		s.Fatalf("connecting to %s: %v", addr, err)
	}
	s.t.Cleanup(func() { conn.Close() })
	c := &imapConn{s: s, conn: conn, r: bufio.NewReader(conn), w: conn}
	greeting := c.readLine()
	if !strings.HasPrefix(greeting, "* OK") {
		c.fatalf("greeting is not * OK")
	}
	return c
}

func (c *imapConn) fatalf(format string, args ...any) {
	c.s.t.Helper()
	c.s.Fatalf("%s\n--- IMAP transcript (C: client, S: server; last lines) ---\n%s",
		fmt.Sprintf(format, args...), lastLines(strings.Join(c.transcript, "\n"), 30))
}

func (c *imapConn) readLine() string {
	c.s.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.fatalf("reading from the server: %v", err)
	}
	line = strings.TrimRight(line, "\r\n")
	c.transcript = append(c.transcript, "S: "+clip(line))
	return line
}

var literalRE = regexp.MustCompile(`\{(\d+)\}$`)

// readResponse reads one server response line with the literals it
// carries (the literal bytes are kept in the returned text).
func (c *imapConn) readResponse() string {
	c.s.t.Helper()
	line := c.readLine()
	for {
		m := literalRE.FindStringSubmatch(line)
		if m == nil {
			return line
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.fatalf("reading a %d-byte literal: %v", n, err)
		}
		c.transcript = append(c.transcript, fmt.Sprintf("S: (%d bytes of literal)", n))
		line += "\r\n" + string(buf) + c.readLine()
	}
}

func (c *imapConn) send(line, shown string) {
	c.s.t.Helper()
	c.transcript = append(c.transcript, "C: "+shown)
	c.conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c.w, line+"\r\n"); err != nil {
		c.fatalf("writing to the server: %v", err)
	}
	if c.flush != nil {
		if err := c.flush(); err != nil {
			c.fatalf("flushing the DEFLATE stream: %v", err)
		}
	}
}

// do sends a command and reads up to its tagged response; it returns the
// untagged responses and the tagged status line (without the tag).
func (c *imapConn) do(format string, args ...any) ([]string, string) {
	c.s.t.Helper()
	cmd := fmt.Sprintf(format, args...)
	return c.doShown(cmd, cmd)
}

func (c *imapConn) doShown(cmd, shown string) ([]string, string) {
	c.s.t.Helper()
	c.tag++
	tag := "e" + strconv.Itoa(c.tag)
	c.send(tag+" "+cmd, tag+" "+shown)
	return c.collect(tag)
}

func (c *imapConn) collect(tag string) ([]string, string) {
	c.s.t.Helper()
	var untagged []string
	for {
		line := c.readResponse()
		if strings.HasPrefix(line, tag+" ") {
			return untagged, strings.TrimPrefix(line, tag+" ")
		}
		untagged = append(untagged, line)
	}
}

// ok runs a command that must answer OK.
func (c *imapConn) ok(format string, args ...any) []string {
	c.s.t.Helper()
	untagged, status := c.do(format, args...)
	if !strings.HasPrefix(status, "OK") {
		c.fatalf("%s: want OK, got %q", strings.Fields(fmt.Sprintf(format, args...))[0], status)
	}
	return untagged
}

// login logs in with LOGIN; the transcript shows no credentials.
func (c *imapConn) login(u user) string {
	c.s.t.Helper()
	_, status := c.doShown(fmt.Sprintf("LOGIN %s %s", quote(u.name), quote(u.pass)), "LOGIN *** ***")
	if !strings.HasPrefix(status, "OK") {
		c.fatalf("LOGIN as %s: want OK, got %q", u.name, status)
	}
	return status
}

// appendMessage appends raw to mailbox with a synchronising literal.
func (c *imapConn) appendMessage(mailbox string, flags string, raw []byte) {
	c.s.t.Helper()
	c.tag++
	tag := "e" + strconv.Itoa(c.tag)
	c.send(fmt.Sprintf("%s APPEND %s (%s) {%d}", tag, quote(mailbox), flags, len(raw)),
		fmt.Sprintf("%s APPEND %s (%s) {%d}", tag, quote(mailbox), flags, len(raw)))
	if cont := c.readLine(); !strings.HasPrefix(cont, "+") {
		c.fatalf("APPEND: want a continuation, got %q", cont)
	}
	c.conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.w.Write(raw); err != nil {
		c.fatalf("writing the APPEND literal: %v", err)
	}
	c.send("", fmt.Sprintf("(%d bytes of message)", len(raw)))
	if _, status := c.collect(tag); !strings.HasPrefix(status, "OK") {
		c.fatalf("APPEND: want OK, got %q", status)
	}
}

// compress sends COMPRESS DEFLATE and switches both directions to raw
// DEFLATE (RFC 4978).
func (c *imapConn) compress() {
	c.s.t.Helper()
	c.ok("COMPRESS DEFLATE")
	fw, err := flate.NewWriter(c.conn, flate.DefaultCompression)
	if err != nil {
		c.fatalf("%v", err)
	}
	c.w, c.flush = fw, fw.Flush
	c.r = bufio.NewReader(flate.NewReader(c.r))
	c.transcript = append(c.transcript, "-- DEFLATE from here on, both ways --")
}

// idleUntil enters IDLE, waits up to timeout for an untagged response
// matching re, then ends IDLE. It returns the matching line.
func (c *imapConn) idleUntil(re *regexp.Regexp, timeout time.Duration, during func()) string {
	c.s.t.Helper()
	c.tag++
	tag := "e" + strconv.Itoa(c.tag)
	c.send(tag+" IDLE", tag+" IDLE")
	if cont := c.readLine(); !strings.HasPrefix(cont, "+") {
		c.fatalf("IDLE: want a continuation, got %q", cont)
	}
	during()
	deadline := time.Now().Add(timeout)
	found := ""
	for found == "" {
		c.conn.SetReadDeadline(deadline)
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.fatalf("no untagged response matching %q within %v of the submission (%v)", re, timeout, err)
		}
		line = strings.TrimRight(line, "\r\n")
		c.transcript = append(c.transcript, "S: "+clip(line))
		if re.MatchString(line) {
			found = line
		}
	}
	c.send("DONE", "DONE")
	if _, status := c.collect(tag); !strings.HasPrefix(status, "OK") {
		c.fatalf("IDLE: want OK after DONE, got %q", status)
	}
	return found
}

func (c *imapConn) logout() {
	c.s.t.Helper()
	c.ok("LOGOUT")
	c.conn.Close()
}

// quote makes an IMAP quoted string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}
