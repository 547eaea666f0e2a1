package tlsconf

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"mailproxy/policy"
)

// scriptConn is a provider that sends a fixed transcript and then closes
// its side: each Read hands out as much of the rest as fits, as one TCP
// segment holding the whole transcript would; Writes are recorded.
type scriptConn struct {
	net.Conn // nil: only Read and Write are used
	r        *bytes.Reader
	wrote    bytes.Buffer
}

func (c *scriptConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error) { return c.wrote.Write(b) }

// FuzzSTARTTLS feeds an arbitrary transcript from a provider to the
// STARTTLS negotiation of each protocol and checks that it either refuses
// or goes ahead only when going ahead is right:
//
//   - it goes ahead only after a greeting that is not PREAUTH/BYE/-ERR,
//     STARTTLS (STLS) among the capabilities, our command, and the
//     server's yes to it; what we sent is exactly the protocol's command
//     sequence and nothing of the server's text;
//
//   - the yes must be the last thing the server sent: a byte after it
//     (pipelined into the same read) is a refusal, since it would be read
//     as if it came under TLS;
//
//   - every refusal is a *policy.Denied with reason starttls, a
//     *RefusedError, or the server's early close;
//
//   - it reads at most a bounded amount and writes at most three commands.
//
//     go test -run '^$' -fuzz '^FuzzSTARTTLS$' -fuzztime 60s ./tlsconf/
func FuzzSTARTTLS(f *testing.F) {
	imapCaps := "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na OK done\r\n"
	popCaps := "+OK\r\nUSER\r\nSTLS\r\nSASL PLAIN\r\n.\r\n"
	ehlo := "250-mail.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
	for _, s := range []struct {
		proto uint8
		text  string
	}{
		{0, "* OK ready\r\n" + imapCaps + "b OK begin TLS\r\n"},
		{0, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\nb OK begin\r\n"},
		{0, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\nb OK begin\r\n* OK [CAPABILITY AUTH=PLAIN] injected\r\n"},
		{0, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n* 1 EXISTS\r\nb OK begin\n"},
		{0, "* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in\r\n"},
		{0, "* BYE go away\r\n"},
		{0, "* OK ready\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na OK done\r\n"},
		{0, "* OK ready\r\n" + imapCaps + "b NO not now\r\n"},
		{0, "* OK ready\r\n" + imapCaps + "b OKAY\r\n"},
		{0, "* OK [CAPABILITY STARTTLS\r\n"},
		{1, "+OK POP3 ready\r\n" + popCaps + "+OK begin TLS\r\n"},
		{1, "+OK POP3 ready\r\n" + popCaps + "+OK begin TLS\r\n+OK injected\r\n"},
		{1, "+OK POP3 ready\r\n-ERR unknown command\r\n"},
		{1, "+OK POP3 ready\r\n+OK\r\nUSER\r\n.\r\n"},
		{1, "-ERR busy\r\n"},
		{1, "+OK\r\n+OK\r\n" + strings.Repeat("X\r\n", 250)},
		{2, "220-mail.test ESMTP\r\n220 ready\r\n" + ehlo + "220 2.0.0 go ahead\r\n"},
		{2, "220 mail.test ESMTP\r\n" + ehlo + "220 2.0.0 go ahead\r\n250 injected\r\n"},
		{2, "220 mail.test ESMTP\r\n" + ehlo + "454 4.7.0 TLS not available\r\n"},
		{2, "220 mail.test\r\n250-x\r\n251 y\r\n"},
		{2, "554 no\r\n"},
		{2, "220\r\n250-\r\n250 STARTTLS\r\n220\n"},
		{2, "22"},
		{0, strings.Repeat("*", 20000) + "\r\n"},
	} {
		f.Add(s.proto, []byte(s.text))
	}
	f.Fuzz(func(t *testing.T, protoSel uint8, text []byte) {
		proto := policy.Protos[int(protoSel)%len(policy.Protos)]
		c := &scriptConn{r: bytes.NewReader(text)}
		start := time.Now()
		err := startTLS(c, proto, "mail.example", "")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("startTLS took %v on %d bytes", d, len(text))
		}
		read := len(text) - c.r.Len()
		if read > maxPreTLSLines*(maxPreTLSLine+4096)*3 {
			t.Fatalf("startTLS read %d bytes", read)
		}
		sent := c.wrote.String()
		if n := strings.Count(sent, "\r\n"); n > 3 || !strings.HasSuffix(sent, "\r\n") && sent != "" {
			t.Fatalf("startTLS sent %q", sent)
		}
		lines := strings.SplitAfter(string(text[:read]), "\n")

		if err != nil {
			var d *policy.Denied
			var refused *RefusedError
			switch {
			case errors.As(err, &d):
				if d.Reason != policy.ReasonSTARTTLS {
					t.Fatalf("startTLS refused with reason %s: %v", d.Reason, err)
				}
			case errors.As(err, &refused):
			case errors.Is(err, io.ErrUnexpectedEOF) && read == len(text):
			default:
				t.Fatalf("startTLS failed with %T %v", err, err)
			}
			return
		}

		// It went ahead: check that it should have.
		if len(text) <= 4096 && read != len(text) {
			t.Fatalf("startTLS went ahead with %q unread behind the server's yes", text[read:])
		}
		if !strings.HasSuffix(string(text[:read]), "\n") {
			t.Fatalf("startTLS went ahead in the middle of a line: %q", text[:read])
		}
		last := strings.TrimRight(lines[len(lines)-2], "\r\n") // SplitAfter leaves "" last
		first := strings.ToUpper(lines[0])
		offered := false
		switch proto {
		case policy.IMAP:
			if sent != "a CAPABILITY\r\nb STARTTLS\r\n" && sent != "b STARTTLS\r\n" {
				t.Fatalf("IMAP: sent %q", sent)
			}
			if !strings.HasPrefix(first, "* OK") || !strings.HasPrefix(strings.ToUpper(last), "B OK") {
				t.Fatalf("IMAP: went ahead on greeting %q and reply %q", lines[0], last)
			}
			for _, l := range lines[:len(lines)-2] {
				u := strings.ToUpper(l)
				if (strings.HasPrefix(u, "* CAPABILITY ") || strings.Contains(u, "[CAPABILITY ")) && strings.Contains(u, "STARTTLS") {
					offered = true
				}
			}
		case policy.POP3:
			if sent != "CAPA\r\nSTLS\r\n" {
				t.Fatalf("POP3: sent %q", sent)
			}
			if !strings.HasPrefix(first, "+OK") || !strings.HasPrefix(last, "+OK") {
				t.Fatalf("POP3: went ahead on greeting %q and reply %q", lines[0], last)
			}
			for _, l := range lines[2 : len(lines)-2] {
				if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "STLS") {
					offered = true
				}
			}
		case policy.SMTP:
			if sent != "EHLO localhost\r\nSTARTTLS\r\n" {
				t.Fatalf("SMTP: sent %q", sent)
			}
			if !strings.HasPrefix(first, "220") || !(last == "220" || strings.HasPrefix(last, "220 ")) {
				t.Fatalf("SMTP: went ahead on greeting %q and reply %q", lines[0], last)
			}
			for _, l := range lines {
				if len(l) > 4 && strings.HasPrefix(l, "250") {
					if f := strings.Fields(l[4:]); len(f) > 0 && strings.EqualFold(f[0], "STARTTLS") {
						offered = true
					}
				}
			}
		}
		if !offered {
			t.Fatalf("%s: went ahead, but the server never offered STARTTLS: %q", proto, text)
		}
	})
}
