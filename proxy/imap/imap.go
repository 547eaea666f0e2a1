// Package imap is mailproxy's IMAP front. It handles the app's
// pre-authentication dialogue itself (CAPABILITY, NOOP, LOGOUT, ID, STARTTLS,
// LOGIN, AUTHENTICATE PLAIN and LOGIN), logs in at the provider with the
// same credentials over policed TLS, relays the provider's answer under the
// app's own tag, and then splices the two byte streams without parsing them,
// so that every extension the provider has works end to end.
//
// It never forwards the app's ID fields, never forwards text the provider
// sent before TLS, and never passes on a login REFERRAL.
package imap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// Front serves IMAP sessions. The zero value is ready to use.
type Front struct{}

var _ proxy.Front = Front{}

// Refuse turns an app away before its session starts.
func (Front) Refuse(w io.Writer, _ policy.Reason, text string) {
	fmt.Fprintf(w, "* BYE [UNAVAILABLE] %s\r\n", text)
}

// session is one IMAP session until the relay takes over.
type session struct {
	s *proxy.Session
	p *proxy.Prelogin
}

// Serve runs one session: mailproxy's own pre-login dialogue, with no
// connection to the provider until the app logs in.
func (Front) Serve(ctx context.Context, s *proxy.Session) error {
	return s.ServeLines(ctx, &session{s: s})
}

// Greeting is mailproxy's own greeting; nothing is known of the provider
// yet.
func (f *session) Greeting(p *proxy.Prelogin) string {
	f.p = p
	return fmt.Sprintf("* OK [CAPABILITY %s] mailproxy ready\r\n", f.capabilities())
}

// Goodbye is the BYE before mailproxy closes the connection (RFC 9051
// §7.1.5; [LIMIT] is RFC 5530's code for a limit).
func (f *session) Goodbye(limit bool, text string) string {
	if limit {
		return "* BYE [LIMIT] " + text + "\r\n"
	}
	return "* BYE Autologout: " + text + "\r\n"
}

func (f *session) write(format string, args ...any) error { return f.p.Printf(format, args...) }

// Command reads and runs one pre-login command; done means the session is
// over (the app logged out, or logged in and the relay has ended).
func (f *session) Command(ctx context.Context, p *proxy.Prelogin) (bool, error) {
	c, err := readCommand(p)
	if err != nil {
		var se *errSyntax
		if errors.As(err, &se) {
			return false, f.write("%s BAD %s\r\n", se.tag, se.msg)
		}
		return false, err
	}
	return f.handle(ctx, c)
}

func (f *session) handle(ctx context.Context, c *command) (done bool, err error) {
	switch c.name {
	case "CAPABILITY":
		return false, f.write("* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n", f.capabilities(), c.tag)
	case "NOOP":
		return false, f.write("%s OK NOOP completed\r\n", c.tag)
	case "LOGOUT":
		f.write("* BYE mailproxy logging out\r\n%s OK LOGOUT completed\r\n", c.tag)
		return true, nil
	case "ID":
		// Answered here: the app's ID fields would tell the provider which
		// program and computer the user has (RFC 2971 allows NIL).
		return false, f.write("* ID NIL\r\n%s OK ID completed\r\n", c.tag)
	case "STARTTLS":
		if !f.s.OffersSTARTTLS() {
			return false, f.write("%s BAD STARTTLS is not offered on this listener\r\n", c.tag)
		}
		if err := f.write("%s OK Begin TLS negotiation now\r\n", c.tag); err != nil {
			return true, err
		}
		return false, f.p.StartTLS()
	case "LOGIN":
		if len(c.args) != 2 {
			return false, f.write("%s BAD LOGIN takes a user name and a password\r\n", c.tag)
		}
		user, ok1 := c.args[0].astring()
		pass, ok2 := c.args[1].astring()
		if !ok1 || !ok2 {
			return false, f.write("%s BAD LOGIN takes a user name and a password\r\n", c.tag)
		}
		return f.login(ctx, c.tag, proxy.Credentials{Username: user, Password: proxy.NewSecret(pass)})
	case "AUTHENTICATE":
		if !f.s.PlaintextAuthAllowed() {
			return false, f.privacyRequired(c.tag)
		}
		creds, err := f.authenticate(c)
		var se *errSyntax
		switch {
		case err == nil:
			return f.login(ctx, c.tag, creds)
		case errors.As(err, &se):
			return false, f.write("%s BAD %s\r\n", c.tag, se.msg)
		case errors.Is(err, proxy.ErrSASLCancelled):
			return false, f.write("%s BAD AUTHENTICATE cancelled\r\n", c.tag)
		case errors.Is(err, proxy.ErrSASLMalformed):
			return false, f.write("%s BAD Malformed SASL response\r\n", c.tag)
		case errors.Is(err, proxy.ErrSASLMechanism):
			return false, f.write("%s NO Unsupported mechanism: mailproxy offers AUTH=PLAIN and AUTH=LOGIN\r\n", c.tag)
		}
		return false, err
	}
	return false, f.write("%s BAD %s is not available before login (mailproxy handles CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and AUTHENTICATE until then)\r\n", c.tag, clip(c.name))
}

// privacyRequired refuses a login without TLS on a LAN listener, audited.
func (f *session) privacyRequired(tag string) error {
	f.s.DenyPlaintextAuth()
	return f.write("%s NO [PRIVACYREQUIRED] Use STARTTLS before logging in on this listener\r\n", tag)
}

// login logs in at the provider with the app's credentials and, when that
// succeeds, relays until the session ends.
func (f *session) login(ctx context.Context, tag string, creds proxy.Credentials) (bool, error) {
	s := f.s
	if !s.PlaintextAuthAllowed() {
		return false, f.privacyRequired(tag)
	}
	var res *loginResult
	up, ok, err := proxy.LoginVia(ctx, s, creds, start, func(u *upstream, c proxy.Credentials) (bool, error) {
		var err error
		res, err = u.login(c)
		return err == nil && res.ok, err
	})
	var ie *proxy.InputError
	var re *proxy.RouteError
	var le *proxy.LimitError
	var ae *proxy.AuthError
	switch {
	case errors.As(err, &le):
		return false, err // the session ends with a BYE
	case errors.As(err, &ae):
		return false, f.write("%s NO [AUTHENTICATIONFAILED] %s\r\n", tag, proxy.Printable(ae.Text, 300))
	case errors.As(err, &ie):
		return false, f.write("%s BAD %s\r\n", tag, ie.Text)
	case errors.As(err, &re):
		return false, f.write("%s NO [CONTACTADMIN] %s\r\n", tag, re.Text)
	case err != nil:
		return false, f.write("%s NO [UNAVAILABLE] %s\r\n", tag, proxy.Explain(err))
	}
	untagged := f.filterUntagged(up, res.untagged)
	tagged := f.filterStatus(up, res.tagged)
	if err := f.write("%s%s %s\r\n", untagged, tag, tagged); err != nil {
		return true, err
	}
	if !ok {
		return false, nil
	}
	// Logged in: from here on the provider speaks to the app directly.
	return true, f.p.Relay(up.conn.Conn, up.br, func(w io.Writer) io.Writer {
		return &idFilter{w: w, refusedCompress: func() {
			f.s.Deny(policy.ReasonInput, "", "the app asked for COMPRESS after login: sent on as a mechanism the provider refuses, so that the stream (and the ID filter) stays readable")
		}}
	})
}

// capabilities is mailproxy's own list before login; it promises nothing
// about the provider, which is not connected yet. After login the app sees
// the provider's (in the login reply, and for every CAPABILITY).
func (f *session) capabilities() string {
	caps := []string{"IMAP4rev1"}
	if f.s.OffersSTARTTLS() {
		caps = append(caps, "STARTTLS")
	}
	if f.s.PlaintextAuthAllowed() {
		caps = append(caps, "AUTH=PLAIN", "AUTH=LOGIN")
	} else {
		caps = append(caps, "LOGINDISABLED")
	}
	return strings.Join(append(caps, "SASL-IR", "ID"), " ")
}
