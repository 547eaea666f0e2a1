// Package pop3 is mailproxy's POP3 front. It handles the app's
// AUTHORIZATION state itself (CAPA, STLS, USER, PASS, AUTH PLAIN and LOGIN,
// NOOP, QUIT; RFC 1939, RFC 2449, RFC 2595, RFC 5034), logs in at the
// provider with the same credentials over policed TLS, relays the
// provider's +OK or -ERR (response codes included, RFC 2449 §8, RFC 3206),
// and then splices the two byte streams without parsing them, so that
// RETR, TOP, UIDL and every extension pass untouched.
//
// It never offers APOP or a challenge mechanism (they need the cleartext
// password at the provider), never forwards text the provider sent before
// TLS, and never writes a credential or message content anywhere but to
// the provider and the app.
package pop3

import (
	"context"
	"fmt"
	"io"
	"strings"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// Front serves POP3 sessions. The zero value is ready to use.
type Front struct{}

var _ proxy.Front = Front{}

// Refuse turns an app away before its session starts (RFC 3206 §5): a
// client outside allow_clients will never be served ([SYS/PERM]); a limit
// passes, so [SYS/TEMP] tells the app to try again later.
func (Front) Refuse(w io.Writer, reason policy.Reason, text string) {
	code := "SYS/TEMP"
	if reason == policy.ReasonRemoteClient {
		code = "SYS/PERM"
	}
	fmt.Fprintf(w, "-ERR [%s] %s\r\n", code, text)
}

// session is one POP3 session until the relay takes over.
type session struct {
	s *proxy.Session
	p *proxy.Prelogin
	// user is the argument of the last USER, waiting for PASS.
	user    string
	hasUser bool
}

func (f *session) write(format string, args ...any) error { return f.p.Printf(format, args...) }

// Serve runs one session: mailproxy's own AUTHORIZATION state, with no
// connection to the provider until the app logs in.
func (Front) Serve(ctx context.Context, s *proxy.Session) error {
	return s.ServeLines(ctx, &session{s: s})
}

// Greeting carries no APOP timestamp (RFC 1939 §7), so the app is never
// tempted to send a digest mailproxy cannot relay.
func (f *session) Greeting(p *proxy.Prelogin) string {
	f.p = p
	return "+OK mailproxy ready\r\n"
}

// Goodbye is the -ERR before mailproxy closes the connection.
func (f *session) Goodbye(limit bool, text string) string {
	if limit {
		return "-ERR [SYS/PERM] " + text + ", closing the connection\r\n"
	}
	return "-ERR Autologout: " + text + "\r\n"
}

// Command reads and runs one command of the AUTHORIZATION state.
func (f *session) Command(ctx context.Context, p *proxy.Prelogin) (bool, error) {
	line, err := p.ReadLine()
	if err != nil {
		return false, err
	}
	return f.handle(ctx, string(line))
}

// handle runs one command of the AUTHORIZATION state (RFC 1939 §4); done
// means the session is over (the app quit, or logged in and the relay has
// ended).
func (f *session) handle(ctx context.Context, line string) (done bool, err error) {
	keyword, arg, _ := strings.Cut(line, " ")
	keyword = strings.ToUpper(keyword)
	switch keyword {
	case "CAPA":
		return false, f.write("%s", f.capa())
	case "NOOP":
		return false, f.write("+OK\r\n")
	case "QUIT":
		// RFC 1939 §4: QUIT in the AUTHORIZATION state changes nothing.
		f.write("+OK mailproxy signing off\r\n")
		return true, nil
	case "STLS":
		return f.stls()
	case "USER", "PASS", "AUTH":
		if !f.s.PlaintextAuthAllowed() {
			f.user, f.hasUser = "", false
			f.s.DenyPlaintextAuth()
			return false, f.write("-ERR [AUTH] Use STLS before logging in on this listener\r\n")
		}
		switch keyword {
		case "USER":
			return false, f.userCmd(arg)
		case "PASS":
			return f.pass(ctx, arg)
		}
		return f.auth(ctx, arg)
	case "APOP":
		return false, f.write("-ERR APOP is not offered: mailproxy needs the password itself to log in at the provider; use USER and PASS, or AUTH PLAIN\r\n")
	case "":
		return false, f.write("-ERR Empty command\r\n")
	}
	return false, f.write("-ERR %s is not available before login (mailproxy answers CAPA, STLS, USER, PASS, AUTH, NOOP and QUIT until then)\r\n", clip(keyword))
}

// stls starts local TLS with the app (RFC 2595 §4). What the app said
// before, such as a USER, is forgotten.
func (f *session) stls() (bool, error) {
	if !f.s.OffersSTARTTLS() {
		if f.s.ClientIsTLS() {
			return false, f.write("-ERR Already under TLS\r\n")
		}
		return false, f.write("-ERR STLS is not offered on this listener\r\n")
	}
	if err := f.write("+OK Begin TLS negotiation now\r\n"); err != nil {
		return true, err
	}
	f.user, f.hasUser = "", false
	return false, f.p.StartTLS()
}

// clip shortens text the app sent for an answer.
func clip(s string) string {
	return proxy.Printable(s, 40)
}

// clip200 shortens text for an answer or an error.
func clip200(s string) string {
	return proxy.Printable(s, 200)
}
