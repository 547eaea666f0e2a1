// Package smtp is mailproxy's SMTP submission front. Unlike the IMAP and
// POP3 fronts it never splices bytes: it speaks SMTP on both sides, with
// go-smtp's Server towards the app and go-smtp's Client towards the
// provider, because apps do not send EHLO again after AUTH, every envelope
// reply must be the provider's own (RFC 5321 §4.2: code, enhanced code,
// text), and nothing may be acknowledged that the provider has not taken.
//
// It connects to the provider only when the app logs in (AUTH), through
// the one login path of all fronts (proxy.Session.LoginUpstream), and
// keeps that connection for the session's transactions. It introduces
// itself there with a neutral EHLO name, logs in with the app's own AUTH
// PLAIN or LOGIN credentials (RFC 4954), relays MAIL and RCPT one to one,
// and streams DATA — and BDAT (RFC 3030), sent on as DATA — without holding
// the message in memory.
//
// It must never: say 250 to a message before the provider said 250 for it;
// send the app's EHLO name to the provider; keep a password or message
// beyond the command being relayed; put a credential or message content in
// an error or an audit event; offer BINARYMIME, or an AUTH mechanism it
// cannot relay (CRAM-MD5 needs the password at the provider, not a digest).
package smtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// Front serves SMTP submission sessions. The zero value is ready to use.
type Front struct{}

var _ proxy.Front = Front{}

// Refuse turns an app away before its session starts (RFC 5321 §3.8: 421
// closes the transmission channel).
func (Front) Refuse(w io.Writer, _ policy.Reason, text string) {
	fmt.Fprintf(w, "421 4.7.0 %s\r\n", proxy.Printable(text, maxText))
}

const (
	// defaultMaxMessage is the SIZE offered when the configuration gives
	// none (proxy.Limits.MaxMessageSize).
	defaultMaxMessage = 64 << 20
	// minLineLength is go-smtp's own line limit: RFC 5321 §4.5.3.1.6's
	// 1000 octets, doubled for apps that overstep it.
	minLineLength = 2000
	// maxText bounds text of mailproxy's own in one reply line.
	maxText = 400
)

// session is one app session: the go-smtp server conversation with the
// app, and the provider connection behind it. It is also the go-smtp
// backend session (Mail, Rcpt, Data, Auth...), so every go-smtp session of
// the connection (a new one starts after STARTTLS) shares this state.
type session struct {
	s       *proxy.Session
	ctx     context.Context
	app     *appConn
	timeout time.Duration // command_timeout, for both sides
	maxSize int64         // the SIZE offered to the app (RFC 1870)

	authed atomic.Bool // the provider accepted the app's AUTH
	// authDenied: a command before login was refused and audited.
	authDenied atomic.Bool

	// current is the provider connection, for cutting it short from
	// another goroutine when ctx ends.
	current atomic.Pointer[upstream]

	// mu is held by every step that talks to the provider: go-smtp runs
	// BDAT's Data in a goroutine of its own, concurrently with RSET.
	mu         sync.Mutex
	up         *upstream
	sawTLS     bool // the app has done STARTTLS
	rcpts      int  // recipients the provider accepted in this transaction
	rcptDenied bool // the recipients limit was audited in this transaction

	errMu sync.Mutex
	err   error // why the session ended badly, for session.end
}

// Serve runs one session: one go-smtp server conversation on the app's
// connection until it ends. Nothing is sent to the provider, and no
// connection made to it, before the app's AUTH.
func (Front) Serve(ctx context.Context, s *proxy.Session) error {
	if err := s.StartImplicitTLS(); err != nil {
		return err
	}
	f := &session{s: s, ctx: ctx, timeout: s.Settings.Limits.CommandTimeout}
	f.app = newAppConn(s, f.readDeadline)
	f.maxSize = f.messageLimit()
	f.app.sizeLimit = f.maxSize

	stop := context.AfterFunc(ctx, f.abort)
	defer stop()
	f.converse()
	f.quit()
	return f.result()
}

// converse runs go-smtp's server on the app's connection alone and returns
// when that conversation is over. go-smtp has no per-connection serve, so
// it gets a listener that hands out this one connection and then waits for
// it to close.
func (f *session) converse() {
	srv := gosmtp.NewServer(gosmtp.BackendFunc(f.newSession))
	srv.Domain = "mailproxy"
	srv.ErrorLog = errorLog{f}
	srv.MaxLineLength = max(minLineLength, f.s.Settings.Limits.MaxLine)
	srv.WriteTimeout = f.timeout
	// ReadTimeout stays 0: appConn sets a deadline before every read, so
	// that it also bounds each read of the message and the STARTTLS
	// handshake, and knows the pre-login deadline.
	srv.MaxMessageBytes = f.maxSize
	// MaxRecipients stays 0: Rcpt enforces the limit, so that it is audited.
	srv.AllowInsecureAuth = f.s.PlaintextAuthAllowed()
	if f.s.Settings.Listen.LocalSecurity == proxy.LocalSTARTTLS && f.s.OffersSTARTTLS() {
		srv.TLSConfig = f.s.Settings.LocalTLS // RFC 3207
	}
	// The provider is not connected when the app asks EHLO, so the reply
	// offers what most providers have: 8BITMIME (RFC 6152; go-smtp always
	// offers it), SMTPUTF8 (RFC 6531) and DSN (RFC 3461). A transaction
	// that uses one the provider lacks is refused at MAIL or RCPT with a
	// text that says so (go-smtp's client would otherwise drop the
	// parameter silently).
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	ln := &oneConnListener{conn: f.app, closed: make(chan struct{})}
	srv.Serve(ln) // returns net.ErrClosed once the conversation is over
	// Shutdown waits for the connection's goroutine to finish, error log
	// included.
	srv.Shutdown(context.Background())
}

// messageLimit is the SIZE offered to the app (RFC 1870 §4):
// max_message_size, or 64 MiB. A provider with a smaller SIZE refuses a
// larger message itself, at MAIL (SIZE=) or at the end of DATA, in its
// own words.
func (f *session) messageLimit() int64 {
	if limit := f.s.Settings.Limits.MaxMessageSize; limit > 0 {
		return limit
	}
	return defaultMaxMessage
}

// readDeadline is when the app's next read must have data: command_timeout
// from now, and no later than the pre-login deadline until AUTH succeeded.
func (f *session) readDeadline() (time.Time, bool) {
	d := time.Now().Add(f.timeout)
	if !f.authed.Load() {
		if p := f.s.PreauthDeadline(); p.Before(d) {
			return p, true
		}
	}
	return d, false
}

func (f *session) setUpstream(up *upstream) {
	f.up = up
	f.current.Store(up)
}

// abort cuts both connections when the session's context ends.
func (f *session) abort() {
	f.app.abort()
	if up := f.current.Load(); up != nil {
		up.conn.Close()
	}
}

// quit ends the provider connection politely, after any BDAT transfer
// still running in go-smtp's goroutine has let go of it.
func (f *session) quit() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.up != nil {
		f.up.quit()
	}
}

// fail records why the session ended badly; the first reason wins.
func (f *session) fail(err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// result is Serve's error: a time limit the app ran into (audited here,
// once), or the first failure recorded, or nil for an orderly end.
func (f *session) result() error {
	if preauth, ok := f.app.timedOut(); ok {
		if preauth {
			f.s.Deny(policy.ReasonLimit, "", "the app did not log in within preauth_timeout (%v)", f.s.Settings.Limits.PreauthTimeout)
			return proxy.ErrPreauthTimeout
		}
		return f.s.Deny(policy.ReasonLimit, "", "the app sent nothing for command_timeout (%v)", f.timeout)
	}
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.err
}

// errorLog receives what go-smtp's server reports: a connection error that
// ended the conversation (kept for session.end), or a panic it recovered
// from in a backend call (printed like proxy.Listener prints its own).
type errorLog struct{ f *session }

func (l errorLog) Printf(format string, v ...any) {
	switch {
	case strings.HasPrefix(format, "panic serving") && len(v) >= 2:
		stack := debug.Stack()
		if len(v) >= 3 {
			if b, ok := v[2].([]byte); ok {
				stack = b // go-smtp's, taken where it recovered
			}
		}
		// go-smtp has answered 421 and closes the connection.
		value, carried := proxy.Recovered(v[1])
		if carried != nil {
			stack = carried
		}
		l.f.s.Audit.Panic(value, stack)
		l.f.fail(fmt.Errorf("internal error (please report): %v", value))
	case strings.HasPrefix(format, "error handling") && len(v) >= 2:
		if err, ok := v[1].(error); ok {
			l.f.fail(fmt.Errorf("the app's connection: %w", err))
		}
	}
}

func (l errorLog) Println(...any) {}

// unavailable is the app's reply when the provider cannot be used: X.7.0
// for a refusal by the policy, X.4.0 for a provider that cannot be reached
// or would not serve (RFC 3463 §3.8 and §3.5). The text is proxy.Explain's,
// which never passes on what a server said before TLS (RFC 3207 §4.2).
func unavailable(code int, err error) *gosmtp.SMTPError {
	ec := gosmtp.EnhancedCode{code / 100, 4, 0}
	var d *policy.Denied
	if errors.As(err, &d) {
		ec = gosmtp.EnhancedCode{code / 100, 7, 0}
	}
	return &gosmtp.SMTPError{Code: code, EnhancedCode: ec, Message: proxy.Explain(err)}
}
