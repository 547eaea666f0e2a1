package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// Session is one app connection, from accept to close.
type Session struct {
	ID       string
	Proto    policy.Proto
	Settings *Settings
	Audit    *policy.SessionAudit
	Dialer   *tlsconf.Dialer
	// Client is the app's connection. A front that upgrades it to TLS
	// (local STARTTLS) replaces it with SetClient.
	Client net.Conn
	Remote netip.AddrPort

	start              time.Time
	bytesUp, bytesDown atomic.Int64
	mail               *policy.MailCounts
	cancel             context.CancelFunc

	mu      sync.Mutex
	closers []io.Closer
	closed  bool
	// loggedIn is set once the provider accepted a login; onLogin is
	// called then (the listener's admission stops counting the session as
	// one before login).
	loggedIn bool
	onLogin  func()
	// attempts counts the session's logins (LoginUpstream).
	attempts int
	// admitted is the listener admission's: the session holds a slot.
	admitted bool
	// loggingIn is set while LoginUpstream runs: such a session is never
	// closed to make room (the provider may be checking its password).
	loggingIn atomic.Bool
	// loginErr is the last login attempt that failed without the
	// provider's verdict (unreachable, broken protocol, no mechanism),
	// for session.end when the session ends without a login.
	loginErr error
	// user is the login name of the last attempt (escaped), routedTo the
	// provider it was routed to: for the status page (registry.go).
	user, routedTo string
}

// unexplained is the error session.end carries for a session that ended
// without a login after a login attempt failed for want of a provider.
func (s *Session) unexplained() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loggedIn {
		return nil
	}
	return s.loginErr
}

// SetClient replaces the app's connection (after a local TLS upgrade of
// the counted connection).
func (s *Session) SetClient(c net.Conn) {
	s.mu.Lock()
	s.Client = c
	s.mu.Unlock()
}

// OnClose registers c to be closed when the session ends or is cut short
// by a shutdown.
func (s *Session) OnClose(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return
	}
	s.closers = append(s.closers, c)
}

// finish ends the session: the provider side is closed, and the app's
// connection is half-closed and drained briefly before it is closed, so
// that a last reply (a BYE) is not lost to a reset caused by input the app
// sent that nobody read.
func (s *Session) finish() {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		closeWrite(s.Client)
		s.Client.SetReadDeadline(time.Now().Add(time.Second))
		io.CopyN(io.Discard, s.Client, 64<<10)
	}
	s.close()
}

func (s *Session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, c := range s.closers {
		c.Close()
	}
	s.Client.Close()
	if s.cancel != nil {
		s.cancel()
	}
}

// CountMail records what an SMTP session submitted, and the header fields
// removed from it, for session.end.
func (s *Session) CountMail(messages, recipients, scrubbed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mail == nil {
		s.mail = &policy.MailCounts{}
	}
	s.mail.Messages += messages
	s.mail.Recipients += recipients
	s.mail.Scrubbed += scrubbed
}

// Provider is the listener's fixed provider, or nil on a "*" listener.
func (s *Session) Provider() *policy.Provider { return s.Settings.Listen.Provider }

// Route decides where a login goes, auditing a refusal.
func (s *Session) Route(login string) (policy.Route, error) {
	r, err := policy.RouteLogin(s.Settings.Providers, s.Provider(), s.Proto, login)
	if err != nil {
		s.Audit.Denied(err)
	}
	return r, err
}

// Dial connects to the provider of r under the policy. The connection is
// closed with the session. Refusals are audited (by the dialer) and
// returned as *policy.Denied.
func (s *Session) Dial(ctx context.Context, r policy.Route) (*tlsconf.Upstream, error) {
	// The account reaches the dialer for a proxy that isolates accounts.
	up, err := s.Dialer.Dial(tlsconf.WithAccount(ctx, r.User), r.Provider, r.Endpoint, s.Audit)
	if err != nil {
		return nil, err
	}
	s.OnClose(up)
	return up, nil
}

// Deny audits a refusal the front decided (a limit, a referral) and
// returns it as an error.
func (s *Session) Deny(reason policy.Reason, host, format string, args ...any) error {
	d := policy.Deny(reason, host, format, args...)
	s.Audit.Denied(d)
	return d
}

// PreauthDeadline is when the app must have logged in.
func (s *Session) PreauthDeadline() time.Time {
	return s.start.Add(s.Settings.Limits.PreauthTimeout)
}

// ErrPreauthTimeout ends a session whose app did not log in in time.
var ErrPreauthTimeout = errors.New("no login within preauth_timeout")

// IsTimeout reports whether err is a network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// WriteTimeout bounds one write to the app before login.
const WriteTimeout = 30 * time.Second

// Printf writes a reply to the app before login, under WriteTimeout (the
// app's connection carries only a read deadline then: the pre-login one).
func (s *Session) Printf(format string, args ...any) error {
	s.Client.SetWriteDeadline(time.Now().Add(WriteTimeout))
	_, err := fmt.Fprintf(s.Client, format, args...)
	return err
}
