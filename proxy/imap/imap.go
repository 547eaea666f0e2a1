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
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

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
	s  *proxy.Session
	br *bufio.Reader
	cr *commandReader
	up *upstream
}

func (f *session) client() net.Conn { return f.s.Client }

func (f *session) reset() {
	f.br = bufio.NewReaderSize(f.s.Client, 4096)
	f.cr = &commandReader{br: f.br, w: f.s.Client, maxLine: f.s.Settings.Limits.MaxLine, maxLiteral: f.s.Settings.Limits.MaxLiteral}
}

func (f *session) write(format string, args ...any) error { return f.s.Printf(format, args...) }

// Serve runs one session.
func (Front) Serve(ctx context.Context, s *proxy.Session) error {
	if err := s.BeginPreauth(); err != nil {
		return err
	}
	f := &session{s: s}
	f.reset()

	// With a fixed provider, connect before greeting the app, so that an
	// unreachable or refused provider is a clear BYE rather than a hang.
	if route, ok := s.FixedRoute(); ok {
		up, err := connect(ctx, s, route)
		if err != nil {
			f.write("* BYE [UNAVAILABLE] %s\r\n", proxy.Explain(err))
			return err
		}
		f.up = up
	}
	if err := f.write("* OK [CAPABILITY %s] mailproxy ready\r\n", f.capabilities()); err != nil {
		return err
	}
	for {
		c, err := f.cr.read()
		if err != nil {
			var se *errSyntax
			switch {
			case errors.As(err, &se):
				if err := f.write("%s BAD %s\r\n", se.tag, se.msg); err != nil {
					return err
				}
				continue
			case errors.Is(err, errTooBig):
				return f.limit("a command line or literal before login is over the limit (max_line %d, max_literal %d bytes)",
					s.Settings.Limits.MaxLine, s.Settings.Limits.MaxLiteral)
			}
			return f.readError(err)
		}
		done, err := f.handle(ctx, c)
		if done || err != nil {
			return err
		}
	}
}

// readError ends the session after a failed read from the app.
func (f *session) readError(err error) error {
	return f.s.EndPreauth(err, func() { f.write("* BYE Autologout: no login within %v\r\n", f.s.Settings.Limits.PreauthTimeout) })
}

// limit ends the session for a limit, auditing it.
func (f *session) limit(format string, args ...any) error {
	f.write("* BYE [LIMIT] Command too long\r\n")
	return f.s.Deny(policy.ReasonLimit, "", format, args...)
}

// handle runs one pre-login command; done means the session is over (the
// app logged out, or logged in and the relay has ended).
func (f *session) handle(ctx context.Context, c *command) (done bool, err error) {
	switch c.name {
	case "CAPABILITY":
		return false, f.write("* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n", f.capabilities(), c.tag)
	case "NOOP":
		return false, f.write("%s OK NOOP completed\r\n", c.tag)
	case "LOGOUT":
		f.write("* BYE mailproxy logging out\r\n%s OK LOGOUT completed\r\n", c.tag)
		if f.up != nil {
			f.up.send(f.up.tag() + " LOGOUT")
		}
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
		if err := f.s.StartLocalTLS(f.br); err != nil {
			return true, err
		}
		f.reset()
		f.s.Client.SetReadDeadline(f.s.PreauthDeadline())
		return false, nil
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
			return false, f.write("%s NO [PRIVACYREQUIRED] Use STARTTLS before logging in on this listener\r\n", c.tag)
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
		case errors.Is(err, errTooBig):
			return true, f.limit("a SASL response before login is over max_line (%d bytes)", f.s.Settings.Limits.MaxLine)
		}
		return true, f.readError(err)
	}
	return false, f.write("%s BAD %s is not available before login (mailproxy handles CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and AUTHENTICATE until then)\r\n", c.tag, clip(c.name))
}

// login logs in at the provider with the app's credentials and, when that
// succeeds, relays until the session ends.
func (f *session) login(ctx context.Context, tag string, creds proxy.Credentials) (bool, error) {
	s := f.s
	if !s.PlaintextAuthAllowed() {
		return false, f.write("%s NO [PRIVACYREQUIRED] Use STARTTLS before logging in on this listener\r\n", tag)
	}
	route, err := s.Route(creds.Username)
	if err != nil {
		return false, f.write("%s NO [CONTACTADMIN] %s\r\n", tag, proxy.ExplainRoute(err))
	}
	res, err := f.loginAt(ctx, route, creds)
	if err != nil {
		return false, f.write("%s NO [UNAVAILABLE] %s\r\n", tag, proxy.Explain(err))
	}
	s.Audit.Auth(creds.Username, res.ok)
	untagged := f.filterUntagged(res.untagged)
	tagged := f.filterStatus(res.tagged)
	if err := f.write("%s%s %s\r\n", untagged, tag, tagged); err != nil {
		return true, err
	}
	if !res.ok {
		return false, nil
	}
	// Logged in: from here on the provider speaks to the app directly.
	// Drop the pre-login state first: an idle relayed session should hold
	// as little memory as possible.
	up, appPending, upPending := f.up.conn, proxy.Pending(f.br), proxy.Pending(f.up.br)
	f.br, f.cr, f.up = nil, nil, nil
	s.Client.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	return true, s.Relay(s.Client, appPending, up.Conn, upPending, newIDFilter)
}

// loginAt logs in at route's provider, connecting first when there is no
// connection to it yet. A connection kept from before (dialled before the
// greeting, or left by a failed login) may have been closed by the
// provider while the app was typing: then it connects once more and tries
// again, so that the app does not see a failure for mailproxy's waiting.
func (f *session) loginAt(ctx context.Context, route policy.Route, creds proxy.Credentials) (*loginResult, error) {
	for attempt := 0; ; attempt++ {
		fresh := false
		if f.up == nil || f.up.route.Provider != route.Provider || f.up.route.Endpoint != route.Endpoint {
			if f.up != nil {
				f.up.conn.Close()
				f.up = nil
			}
			up, err := connect(ctx, f.s, route)
			if err != nil {
				return nil, err
			}
			f.up, fresh = up, true
		}
		f.up.route = route
		f.up.deadline(f.s)
		res, err := f.up.login(creds)
		if err == nil {
			return res, nil
		}
		f.up.conn.Close()
		f.up = nil
		if fresh || attempt > 0 || !connectionLost(err) {
			return nil, err
		}
	}
}

// capabilities is mailproxy's own list before login. After login the app
// sees the provider's.
func (f *session) capabilities() string {
	caps := []string{"IMAP4rev1"}
	if f.up != nil && f.up.caps["IMAP4REV2"] {
		caps = append(caps, "IMAP4rev2")
	}
	if f.s.OffersSTARTTLS() {
		caps = append(caps, "STARTTLS")
	}
	if f.s.PlaintextAuthAllowed() {
		caps = append(caps, "AUTH=PLAIN", "AUTH=LOGIN")
	} else {
		caps = append(caps, "LOGINDISABLED")
	}
	caps = append(caps, "SASL-IR")
	switch {
	case f.up != nil && f.up.caps["LITERAL+"]:
		caps = append(caps, "LITERAL+")
	case f.up != nil && f.up.caps["LITERAL-"]:
		caps = append(caps, "LITERAL-")
	}
	return strings.Join(append(caps, "ID"), " ")
}
