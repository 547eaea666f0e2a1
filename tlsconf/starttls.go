package tlsconf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"mailproxy/policy"
)

// maxPreTLSLine bounds one line of the provider's pre-TLS conversation.
const maxPreTLSLine = 8 << 10

// maxPreTLSLines bounds the number of lines of one pre-TLS reply.
const maxPreTLSLines = 200

// startTLS upgrades raw to the point where the TLS handshake starts: it reads
// the greeting, checks that STARTTLS is offered, asks for it, and checks the
// reply. Everything the server said is thrown away. It fails closed: no
// STARTTLS, a refusal, a PREAUTH greeting or any byte after the reply is a
// *policy.Denied with reason starttls.
func startTLS(raw net.Conn, proto policy.Proto, host, ehloName string) error {
	c := &preTLS{br: bufio.NewReaderSize(raw, 4096), w: raw, host: host}
	var err error
	switch proto {
	case policy.IMAP:
		err = c.imap()
	case policy.POP3:
		err = c.pop3()
	case policy.SMTP:
		if ehloName == "" {
			ehloName = "localhost"
		}
		err = c.smtp(ehloName)
	default:
		err = fmt.Errorf("no STARTTLS for protocol %q", proto)
	}
	if err != nil {
		return err
	}
	// Anything already buffered arrived before our handshake started: it
	// would be read as if the server had sent it under TLS (CVE-2011-0411
	// and its IMAP/POP3 cousins). Refuse rather than discard.
	if n := c.br.Buffered(); n > 0 {
		return policy.Deny(policy.ReasonSTARTTLS, host,
			"the server sent %d bytes after its STARTTLS reply, before the TLS handshake (possible command injection)", n)
	}
	return nil
}

type preTLS struct {
	br   *bufio.Reader
	w    io.Writer
	host string
}

func (c *preTLS) deny(format string, args ...any) error {
	return policy.Deny(policy.ReasonSTARTTLS, c.host, format, args...)
}

// denyQuoting refuses, keeping the server's line for the audit log only.
func (c *preTLS) denyQuoting(line, format string, args ...any) error {
	d := policy.Deny(policy.ReasonSTARTTLS, c.host, format, args...)
	d.Quote = clip(line)
	return d
}

// RefusedError is a provider that refused service before TLS (a BYE, -ERR
// or 554 greeting). Its Error text quotes the server for the audit log;
// fronts show the app only that the provider refused the connection, never
// the pre-TLS words.
type RefusedError struct {
	Host  string
	Quote string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s refused the connection before TLS (it said: %q)", e.Host, e.Quote)
}

// line reads one CRLF- or LF-terminated line, without the terminator.
func (c *preTLS) line() (string, error) {
	var b []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		b = append(b, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(b) > maxPreTLSLine {
				return "", c.deny("a pre-TLS line from the server is longer than %d bytes", maxPreTLSLine)
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("the server closed the connection before TLS: %w", io.ErrUnexpectedEOF)
		}
		return "", fmt.Errorf("reading from the server before TLS: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (c *preTLS) send(cmd string) error {
	if _, err := io.WriteString(c.w, cmd+"\r\n"); err != nil {
		return fmt.Errorf("writing to the server before TLS: %w", err)
	}
	return nil
}

// imap follows RFC 9051 §6.2.1 / RFC 3501 §6.2.1.
func (c *preTLS) imap() error {
	greet, err := c.line()
	if err != nil {
		return err
	}
	upper := strings.ToUpper(greet)
	switch {
	case strings.HasPrefix(upper, "* PREAUTH"):
		return c.deny("the server greeted with PREAUTH on a STARTTLS port: the session would be authenticated before TLS")
	case strings.HasPrefix(upper, "* BYE"):
		return &RefusedError{Host: c.host, Quote: clip(greet)}
	case !strings.HasPrefix(upper, "* OK"):
		return c.denyQuoting(greet, "the server's greeting is not IMAP")
	}
	caps := imapCapsFromCode(greet)
	if caps == nil {
		if err := c.send("a CAPABILITY"); err != nil {
			return err
		}
		for range maxPreTLSLines {
			l, err := c.line()
			if err != nil {
				return err
			}
			u := strings.ToUpper(l)
			if strings.HasPrefix(u, "* CAPABILITY ") {
				caps = strings.Fields(u)[2:]
				continue
			}
			if strings.HasPrefix(u, "A ") {
				if !strings.HasPrefix(u, "A OK") {
					return c.denyQuoting(l, "the server refused CAPABILITY before TLS")
				}
				break
			}
		}
	}
	if !containsFold(caps, "STARTTLS") {
		return c.deny("the server does not offer STARTTLS")
	}
	if err := c.send("b STARTTLS"); err != nil {
		return err
	}
	for range maxPreTLSLines {
		l, err := c.line()
		if err != nil {
			return err
		}
		u := strings.ToUpper(l)
		if strings.HasPrefix(u, "* ") {
			continue // untagged data before the reply is ignored, never relayed
		}
		if strings.HasPrefix(u, "B OK") {
			return nil
		}
		return c.denyQuoting(l, "the server refused STARTTLS")
	}
	return c.deny("no reply to STARTTLS")
}

// imapCapsFromCode returns the capabilities of a "[CAPABILITY ...]" response
// code in the greeting, or nil.
func imapCapsFromCode(line string) []string {
	u := strings.ToUpper(line)
	i := strings.Index(u, "[CAPABILITY ")
	if i < 0 {
		return nil
	}
	rest := u[i+len("[CAPABILITY "):]
	j := strings.IndexByte(rest, ']')
	if j < 0 {
		return nil
	}
	return strings.Fields(rest[:j])
}

// pop3 follows RFC 2595 §4 and RFC 2449.
func (c *preTLS) pop3() error {
	greet, err := c.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(greet, "+OK") {
		return &RefusedError{Host: c.host, Quote: clip(greet)}
	}
	if err := c.send("CAPA"); err != nil {
		return err
	}
	l, err := c.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+OK") {
		return c.denyQuoting(l, "the server has no CAPA, so it cannot offer STLS")
	}
	var caps []string
	for i := 0; ; i++ {
		if i == maxPreTLSLines {
			return c.deny("the server's CAPA reply does not end")
		}
		l, err := c.line()
		if err != nil {
			return err
		}
		if l == "." {
			break
		}
		if f := strings.Fields(l); len(f) > 0 {
			caps = append(caps, strings.ToUpper(f[0]))
		}
	}
	if !containsFold(caps, "STLS") {
		return c.deny("the server does not offer STLS")
	}
	if err := c.send("STLS"); err != nil {
		return err
	}
	l, err = c.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+OK") {
		return c.denyQuoting(l, "the server refused STLS")
	}
	return nil
}

// smtpReply reads a possibly multi-line reply (RFC 5321 §4.2).
func (c *preTLS) smtpReply() (code string, lines []string, err error) {
	for i := 0; i < maxPreTLSLines; i++ {
		l, err := c.line()
		if err != nil {
			return "", nil, err
		}
		if len(l) < 3 {
			return "", nil, c.denyQuoting(l, "malformed SMTP reply")
		}
		if code == "" {
			code = l[:3]
		} else if l[:3] != code {
			return "", nil, c.deny("inconsistent SMTP reply codes %s and %s", code, l[:3])
		}
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		lines = append(lines, text)
		if len(l) == 3 || l[3] == ' ' {
			return code, lines, nil
		}
		if l[3] != '-' {
			return "", nil, c.denyQuoting(l, "malformed SMTP reply")
		}
	}
	return "", nil, c.deny("the server's reply does not end")
}

// smtp follows RFC 3207.
func (c *preTLS) smtp(ehloName string) error {
	code, lines, err := c.smtpReply()
	if err != nil {
		return err
	}
	if code != "220" {
		return &RefusedError{Host: c.host, Quote: clip(code + " " + strings.Join(lines, " "))}
	}
	if err := c.send("EHLO " + ehloName); err != nil {
		return err
	}
	code, lines, err = c.smtpReply()
	if err != nil {
		return err
	}
	if code != "250" {
		return c.deny("the server refused EHLO, so it cannot offer STARTTLS: %s", code)
	}
	var exts []string
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			exts = append(exts, strings.ToUpper(f[0]))
		}
	}
	if !containsFold(exts, "STARTTLS") {
		return c.deny("the server does not offer STARTTLS")
	}
	if err := c.send("STARTTLS"); err != nil {
		return err
	}
	code, lines, err = c.smtpReply()
	if err != nil {
		return err
	}
	if code != "220" {
		return c.denyQuoting(code+" "+strings.Join(lines, " "), "the server refused STARTTLS")
	}
	return nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// clip shortens server text for an error message.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
