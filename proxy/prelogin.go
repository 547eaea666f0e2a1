package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"mailproxy/policy"
)

// The pre-login engine of the line-based fronts (IMAP and POP3).
//
// Before login an app is a stranger: anything may be on the other end of
// the socket. Everything it sends goes through one Prelogin, which reads
// under three bounds at once — one line (max_line), one literal
// (max_literal), and the sum of every byte read before login
// (max_prelogin) — and under the pre-login deadline. Going over any bound
// ends the session with the front's goodbye and a policy.denied event with
// reason "limit"; the memory an app can make mailproxy hold before login is
// therefore at most max_prelogin (held twice at worst: as read, and as
// parsed) plus the 4 KiB read buffer. A front supplies only its protocol:
// its greeting, one command at a time, and its goodbye.

// LineFront is a line-based protocol's pre-login side.
type LineFront interface {
	// Greeting is the first line(s) the app gets, with CRLF.
	Greeting(p *Prelogin) string
	// Command reads one command from p and answers it. done means the
	// session is over: the app quit, or it logged in and the relay has
	// ended (then err is the relay's). An error with done false is a
	// failed read or write, which ServeLines turns into the session's end.
	Command(ctx context.Context, p *Prelogin) (done bool, err error)
	// Goodbye is the line, with CRLF, that tells the app mailproxy is
	// closing the connection: for a limit (limit true) or for the
	// pre-login timeout. text says which, in mailproxy's words.
	Goodbye(limit bool, text string) string
}

// LimitError is input over a pre-login bound. The session ends; the limit
// is audited as policy.denied, reason "limit".
type LimitError struct {
	// Detail names the bound, for the audit log.
	Detail string
	// Say is what the app is told, in the front's goodbye; empty means
	// "too much input before login".
	Say string
}

func (e *LimitError) Error() string { return e.Detail }

// Prelogin is the app's connection before login, as a line-based front
// sees it.
type Prelogin struct {
	s    *Session
	br   *bufio.Reader
	left int // bytes the app may still send before login
}

// readBuf is the read buffer before login: commands before login are short.
const readBuf = 4 << 10

// ServeLines runs the pre-login dialogue of a line-based front: implicit
// local TLS where configured, the greeting, then one command at a time
// until the front reports the session done. Limits and the pre-login
// timeout end the session with the front's goodbye, audited.
func (s *Session) ServeLines(ctx context.Context, f LineFront) error {
	if err := s.BeginPreauth(); err != nil {
		return err
	}
	p := &Prelogin{s: s, left: s.Settings.Limits.MaxPrelogin}
	p.br = bufio.NewReaderSize(s.Client, readBuf)
	if err := p.Printf("%s", f.Greeting(p)); err != nil {
		return err
	}
	for {
		done, err := f.Command(ctx, p)
		if done {
			return err
		}
		if err != nil {
			return p.end(f, err)
		}
	}
}

// end ends the session after a failed read or write before login.
func (p *Prelogin) end(f LineFront, err error) error {
	var le *LimitError
	switch {
	case errors.As(err, &le):
		say := le.Say
		if say == "" {
			say = "too much input before login"
		}
		p.Printf("%s", f.Goodbye(true, say))
		return p.s.Deny(policy.ReasonLimit, "", "%s", le.Detail)
	case IsTimeout(err):
		p.Printf("%s", f.Goodbye(false, fmt.Sprintf("no login within %v", p.s.Settings.Limits.PreauthTimeout)))
		p.s.Deny(policy.ReasonLimit, "", "the app did not log in within preauth_timeout (%v)", p.s.Settings.Limits.PreauthTimeout)
		return ErrPreauthTimeout
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
		return nil
	}
	return err
}

// Session is the session the app is in.
func (p *Prelogin) Session() *Session { return p.s }

// take spends n bytes of the pre-login budget.
func (p *Prelogin) take(n int, what string) error {
	if n > p.left {
		p.left = 0
		return &LimitError{Detail: fmt.Sprintf("the app sent more than max_prelogin (%d bytes) before login (%s)", p.s.Settings.Limits.MaxPrelogin, what)}
	}
	p.left -= n
	return nil
}

// ReadLine reads one line from the app, without its line ending. A line
// over max_line, or over what is left of max_prelogin, is a *LimitError;
// the rest of it is not read.
func (p *Prelogin) ReadLine() ([]byte, error) {
	max := p.s.Settings.Limits.MaxLine
	line, err := readLine(p.br, max, func(n int) error { return p.take(n, "command lines") })
	if errors.Is(err, ErrLineTooLong) {
		return nil, &LimitError{Detail: fmt.Sprintf("a command line before login is over max_line (%d bytes)", max)}
	}
	return line, err
}

// ReadLiteral reads the n bytes of a literal. The bounds are checked
// before anything is allocated.
func (p *Prelogin) ReadLiteral(n int64) ([]byte, error) {
	if err := p.CheckLiteral(n); err != nil {
		return nil, err
	}
	if err := p.take(int(n), "literals"); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(p.br, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// CheckLiteral tells whether a literal of n bytes would be within the
// bounds, without reading it: a front asks before it invites the literal
// with a continuation.
func (p *Prelogin) CheckLiteral(n int64) error {
	if max := p.s.Settings.Limits.MaxLiteral; n < 0 || n > int64(max) {
		return &LimitError{Detail: fmt.Sprintf("a literal before login is over max_literal (%d bytes)", max)}
	}
	if n > int64(p.left) {
		return &LimitError{Detail: fmt.Sprintf("the app sent more than max_prelogin (%d bytes) before login (literals)", p.s.Settings.Limits.MaxPrelogin)}
	}
	return nil
}

// Printf writes to the app under WriteTimeout.
func (p *Prelogin) Printf(format string, args ...any) error {
	return p.s.Printf(format, args...)
}

// StartTLS performs the local STARTTLS handshake (after the front said
// "go ahead") and continues on the TLS connection. Bytes the app sent
// behind the STARTTLS command are refused (reason starttls): they would
// otherwise be taken as sent under TLS.
func (p *Prelogin) StartTLS() error {
	if err := p.s.StartLocalTLS(p.br); err != nil {
		return err
	}
	p.br = bufio.NewReaderSize(p.s.Client, readBuf)
	p.s.Client.SetReadDeadline(p.s.PreauthDeadline())
	return nil
}

// Relay ends the pre-login phase once the provider accepted the login and
// splices the app to up until the session ends. What the app sent beyond
// the login command, and what upBR holds of the provider's, are relayed
// first; the read buffers are let go, so that an idle relayed session holds
// as little as possible. toProvider is as for Session.Relay.
func (p *Prelogin) Relay(up net.Conn, upBR *bufio.Reader, toProvider func(io.Writer) io.Writer) error {
	appPending, upPending := Pending(p.br), Pending(upBR)
	p.br = nil
	p.s.Client.SetDeadline(time.Time{})
	return p.s.Relay(p.s.Client, appPending, up, upPending, toProvider)
}
