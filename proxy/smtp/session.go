package smtp

import (
	"fmt"

	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// The session is go-smtp's backend session, with AUTH.
var _ gosmtp.AuthSession = (*session)(nil)

// Replies mailproxy gives itself. Every other reply to MAIL, RCPT and the
// message is the provider's.
var (
	// errAuthRequired answers MAIL before a successful AUTH (RFC 4954 §6).
	errAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required: log in with AUTH first (mailproxy sends nothing to the provider before that)"}
	// errLost answers the command during which the provider connection
	// failed (RFC 5321 §4.2.2: 451, local error in processing; RFC 3463
	// X.4.0, network). The app may try again.
	errLost = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 4, 0},
		Message: "mailproxy lost the connection to the provider before it confirmed this; try again"}
	// errNo8Bit refuses BODY=8BITMIME for a provider without 8BITMIME (RFC
	// 6152 §3): go-smtp's server offers 8BITMIME whatever the provider does.
	errNo8Bit = &gosmtp.SMTPError{Code: 555, EnhancedCode: gosmtp.EnhancedCode{5, 6, 3},
		Message: "the provider does not accept 8-bit messages (it has no 8BITMIME)"}
	// errNoUTF8 refuses SMTPUTF8 (RFC 6531 §3.4) for a provider without it:
	// offered before login, when the provider was not known yet.
	errNoUTF8 = &gosmtp.SMTPError{Code: 555, EnhancedCode: gosmtp.EnhancedCode{5, 6, 7},
		Message: "the provider does not accept internationalized addresses (it has no SMTPUTF8)"}
	// errNoDSN refuses DSN parameters (RFC 3461) for a provider without
	// DSN, rather than dropping the app's request for a notification.
	errNoDSN = &gosmtp.SMTPError{Code: 555, EnhancedCode: gosmtp.EnhancedCode{5, 5, 4},
		Message: "the provider does not take delivery status notification requests (it has no DSN)"}
)

// authRequired refuses a transaction command before login, and audits the
// first such refusal of the session (an open-relay probe is on record, and
// cannot flood the log).
func (f *session) authRequired() error {
	if !f.authDenied.Swap(true) {
		f.s.Deny(policy.ReasonInput, "", "the app sent a mail transaction command before logging in (530)")
	}
	return errAuthRequired
}

// overlong returns the audit of a provider reply over maxReply (replyConn)
// at host.
func (f *session) overlong(host string) func() {
	return func() {
		f.s.Deny(policy.ReasonLimit, host, "the provider's reply is longer than %d bytes, or a line of it than %d; mailproxy reads no more of it and closes the connection", maxReply, maxReplyLine)
	}
}

// gone answers a new transaction once the provider connection is gone,
// saying why, and ends the session (RFC 5321 §3.8).
func gone(why string) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 0},
		Message: proxy.Printable("mailproxy has no connection to the provider any more ("+why+"); connect again", maxText)}
}

// newSession is go-smtp's Backend: it is called at the app's first EHLO,
// and at its first EHLO after STARTTLS.
func (f *session) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	if _, isTLS := c.TLSConnectionState(); isTLS && !f.sawTLS {
		f.sawTLS = true
		// RFC 3207 §4.2: after STARTTLS nothing learnt before it counts,
		// a login included; go-smtp forgets its side, and the provider
		// session logged in before TLS goes too.
		f.mu.Lock()
		if f.authed.Load() {
			f.authed.Store(false)
			f.app.loggedIn.Store(false)
			f.up.kill("the app started TLS after logging in")
			f.up = nil
		}
		f.mu.Unlock()
	}
	return f, nil
}

// Mail relays MAIL FROM (RFC 5321 §4.1.1.2) with the parameters the
// provider supports: SIZE (RFC 1870), BODY (RFC 6152, always 8BITMIME when
// the provider has it), SMTPUTF8 (RFC 6531), AUTH (RFC 4954 §5), RET and
// ENVID (RFC 3461).
func (f *session) Mail(from string, opts *gosmtp.MailOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authed.Load() || f.up == nil {
		return f.authRequired()
	}
	if f.up.lost != "" {
		f.app.end()
		return gone(f.up.lost)
	}
	if opts != nil {
		switch {
		case opts.Body == gosmtp.Body8BitMIME && !f.up.ext.eightBit:
			return errNo8Bit
		case opts.UTF8 && !f.up.ext.smtputf8:
			return errNoUTF8
		case (opts.Return != "" || opts.EnvelopeID != "") && !f.up.ext.dsn:
			return errNoDSN
		}
	}
	f.rcpts, f.rcptDenied = 0, false
	if err := f.up.c.Mail(from, opts); err != nil {
		return f.providerFailed(err, "relaying MAIL")
	}
	f.up.txn = true
	return nil
}

// Rcpt relays RCPT TO (RFC 5321 §4.1.1.3), with the DSN parameters (RFC
// 3461) when the provider supports them. Each recipient gets the
// provider's own answer; only accepted ones count towards max_recipients.
func (f *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authed.Load() || f.up == nil {
		return f.authRequired()
	}
	if f.up.lost != "" {
		return errLost
	}
	if opts != nil && (len(opts.Notify) > 0 || opts.OriginalRecipient != "") && !f.up.ext.dsn {
		return errNoDSN
	}
	if max := f.s.Settings.Limits.MaxRecipients; max > 0 && f.rcpts >= max {
		if !f.rcptDenied {
			f.rcptDenied = true
			f.s.Deny(policy.ReasonLimit, "", "the app gave more than %d recipients for one message (max_recipients)", max)
		}
		// RFC 5321 §4.5.3.1.10: 452, and the client sends the rest in
		// another transaction. RFC 3463 X.5.3: too many recipients.
		return &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 5, 3},
			Message: fmt.Sprintf("Too many recipients: mailproxy takes %d per message (max_recipients)", max)}
	}
	if err := f.up.c.Rcpt(to, opts); err != nil {
		return f.providerFailed(err, "relaying RCPT")
	}
	f.rcpts++
	return nil
}

// Reset is go-smtp's RSET, and its reset after each message and on a
// repeated EHLO. An open transaction at the provider is reset with RSET
// (RFC 5321 §4.1.1.5), so that the connection serves the next one.
func (f *session) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rcpts, f.rcptDenied = 0, false
	if f.up == nil || f.up.lost != "" || !f.up.txn {
		return
	}
	f.up.txn = false
	if err := f.up.c.Reset(); err != nil {
		f.providerFailed(err, "relaying RSET")
	}
}

// Logout is called when go-smtp closes the connection, and after STARTTLS.
// The provider connection lives as long as the app session: Serve ends it.
func (f *session) Logout() error { return nil }

// providerFailed turns a failed command at the provider into the app's
// reply. A reply from the provider is passed on as it is: code, enhanced
// code and text. A 421 from it closes its side (RFC 5321 §3.8), so the
// app's session ends after passing that on. Anything else means the
// connection is no longer usable: it is closed, and the app gets 451.
func (f *session) providerFailed(err error, doing string) error {
	if se, ok := isReply(err); ok {
		if se.Code == 421 {
			f.up.kill("the provider closed the session with 421")
			f.app.end()
		}
		return clip(se)
	}
	f.up.kill(doing + ": " + err.Error())
	f.fail(fmt.Errorf("the provider connection failed while %s: %w", doing, err))
	return errLost
}
