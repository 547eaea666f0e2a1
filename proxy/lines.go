package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"

	"mailproxy/policy"
)

// ErrLineTooLong is returned by ReadLine for a line over the limit.
var ErrLineTooLong = errors.New("line too long")

// ReadLine reads one line from br, ending in LF (with or without CR), and
// returns it without the line ending. A line longer than max bytes is an
// ErrLineTooLong; the rest of it is not read.
func ReadLine(br *bufio.Reader, max int) ([]byte, error) {
	return readLine(br, max, func(int) error { return nil })
}

// readLine is ReadLine that also spends each fragment's length through
// take, which may refuse it.
func readLine(br *bufio.Reader, max int, take func(n int) error) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+2 {
			return nil, ErrLineTooLong
		}
		if err := take(len(frag)); err != nil {
			return nil, err
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
	// The check above allows for a CRLF; a line ended by LF alone must
	// not use the CR's byte.
	if line = trimEOL(line); len(line) > max {
		return nil, ErrLineTooLong
	}
	return line, nil
}

// The provider's side of a line-based login (IMAP, POP3): commands out,
// lines in, each line at most MaxProviderLine.

// MaxProviderLine bounds one line from the provider before the relay.
const MaxProviderLine = 64 << 10

// ErrProviderClosed is a provider connection that ended before its answer.
var ErrProviderClosed = &ProviderError{Msg: "the provider closed the connection"}

// SendLine writes one command line, with CRLF, to the provider.
func SendLine(w io.Writer, line string) error {
	if _, err := io.WriteString(w, line+"\r\n"); err != nil {
		return fmt.Errorf("writing to the provider: %w", err)
	}
	return nil
}

// ProviderLine reads one line from the provider.
func ProviderLine(br *bufio.Reader) (string, error) {
	l, err := ReadLine(br, MaxProviderLine)
	switch {
	case err == nil:
		return string(l), nil
	case errors.Is(err, io.EOF):
		return "", ErrProviderClosed
	case errors.Is(err, ErrLineTooLong):
		return "", &ProviderError{Msg: "the provider sent a line over 64 KiB"}
	}
	return "", fmt.Errorf("reading from the provider: %w", err)
}

// MaxBeforeRelay bounds what a line-based front reads from the provider
// for one login before the relay starts (greeting, capabilities, the
// login's reply), in sum: each line is bounded by MaxProviderLine and
// each IMAP response by its own bound, and only the sum bounds memory.
const MaxBeforeRelay = 1 << 20

// ErrBeforeRelayTooLong ends a login whose provider sent more than
// MaxBeforeRelay before the relay.
var ErrBeforeRelayTooLong = &ProviderError{Msg: "the provider's replies before login are too long (over 1 MiB)"}

// ProviderBudget counts a login's bytes from the provider against
// MaxBeforeRelay. The zero value is a full budget.
type ProviderBudget struct{ read int }

// Spend counts n bytes, or says that they are over the budget.
func (b *ProviderBudget) Spend(n int) error {
	if n > MaxBeforeRelay-b.read { // b.read+n may overflow
		return ErrBeforeRelayTooLong
	}
	b.read += n
	return nil
}

// Line reads one provider line (ProviderLine) and spends it with its line
// end.
func (b *ProviderBudget) Line(br *bufio.Reader) (string, error) {
	l, err := ProviderLine(br)
	if err != nil {
		return "", err
	}
	return l, b.Spend(len(l) + 2)
}

// trimEOL removes a line's LF or CRLF.
func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// Pending returns the bytes br has buffered but not yet handed out, so that
// they can travel on with the connection when the relay takes over.
func Pending(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return bytes.Clone(b)
}

// ClientIsTLS reports whether the app's connection is under local TLS.
func (s *Session) ClientIsTLS() bool {
	_, ok := s.Client.(*tls.Conn)
	return ok
}

// OffersSTARTTLS reports whether the front should offer STARTTLS (or STLS)
// to the app now.
func (s *Session) OffersSTARTTLS() bool {
	return s.Settings.LocalTLS != nil && !s.ClientIsTLS()
}

// PlaintextAuthAllowed reports whether the app may send credentials on its
// connection as it is: always under local TLS and on a loopback-only
// listener; on a LAN listener (a non-loopback address, or any listener with
// allow_clients) only when the configuration says allow_plaintext_auth.
func (s *Session) PlaintextAuthAllowed() bool {
	return s.Settings.Listen.Access.PlaintextAuth(s.ClientIsTLS())
}

// DenyPlaintextAuth audits a login the app tried without TLS on a listener
// where PlaintextAuthAllowed is false; the front then answers with its
// protocol's refusal.
func (s *Session) DenyPlaintextAuth() {
	s.Deny(policy.ReasonPlaintextAuth, "", "the app tried to log in without TLS on LAN listener %s (allow_plaintext_auth is off)", s.Settings.Listen.Address)
}

// StartLocalTLS performs the TLS handshake with the app (local STARTTLS, or
// a listener with local_security = "tls") and makes the TLS connection the
// session's client connection. br must hold no unread bytes: anything the
// app sent before the handshake would otherwise be taken as sent under TLS.
func (s *Session) StartLocalTLS(br *bufio.Reader) error {
	if s.Settings.LocalTLS == nil {
		return errors.New("local TLS is not configured")
	}
	if br != nil && br.Buffered() > 0 {
		return s.Deny(policy.ReasonSTARTTLS, s.Remote.Addr().String(),
			"the app sent %d bytes after STARTTLS, before the TLS handshake", br.Buffered())
	}
	tc := tls.Server(s.Client, s.Settings.LocalTLS)
	tc.SetDeadline(s.PreauthDeadline())
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("local TLS handshake with the app: %w", err)
	}
	tc.SetDeadline(time.Time{})
	s.SetClient(tc)
	return nil
}

// StartImplicitTLS does the app-side handshake at once on a listener with
// local_security = "tls" (TLS from the first byte); elsewhere it does
// nothing.
func (s *Session) StartImplicitTLS() error {
	if s.Settings.Listen.LocalSecurity != LocalTLS {
		return nil
	}
	return s.StartLocalTLS(nil)
}

// BeginPreauth starts a line-based front's session: implicit local TLS
// when configured, then the pre-login deadline on reads from the app.
func (s *Session) BeginPreauth() error {
	if err := s.StartImplicitTLS(); err != nil {
		return err
	}
	s.Client.SetReadDeadline(s.PreauthDeadline())
	return nil
}
