package smtp

import (
	"errors"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// AuthMechanisms are what the app is offered (RFC 4954 §3): the two that
// carry the password itself, which is what the provider needs. go-smtp
// offers them only under TLS or when AllowInsecureAuth says the listener
// may take a password in plaintext (proxy.Session.PlaintextAuthAllowed).
func (f *session) AuthMechanisms() []string {
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts AUTH with the app. Each mechanism ends in login, which asks
// the provider; go-smtp sends the answer (235, or the refusal) to the app.
func (f *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		// RFC 4616: authorization identity, user name, password.
		return auditedServer{f, mech, sasl.NewPlainServer(func(identity, user, pass string) error {
			return f.login(proxy.Credentials{Authzid: identity, Username: user, Password: proxy.NewSecret(pass)})
		})}, nil
	case sasl.Login:
		return auditedServer{f, mech, newLoginServer(func(user, pass string) error {
			return f.login(proxy.Credentials{Username: user, Password: proxy.NewSecret(pass)})
		})}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// auditedServer audits a SASL response the mechanism cannot parse (go-sasl
// PLAIN's "invalid response", an unexpected response), which go-smtp
// answers with 454 itself. Errors from login are replies (*SMTPError),
// audited there when they are refusals of mailproxy's own.
type auditedServer struct {
	f    *session
	mech string
	sasl.Server
}

func (a auditedServer) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := a.Server.Next(response)
	if _, reply := isReply(err); err != nil && !reply {
		a.f.app.malformedAuth("the app's AUTH " + a.mech + " response is malformed")
	}
	return challenge, done, err
}

// errNoUser answers AUTH without a user name (RFC 4954 §4: 501).
var errNoUser = &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2},
	Message: "the AUTH response has no user name"}

// login logs in at the provider with the app's credentials, through the
// one login path of all fronts: the route comes from the login (a "*"
// listener picks the provider by its domain), a new connection is made
// for each attempt, and the provider's verdict is audited. Its refusal
// reaches the app as it gave it (usually 535).
func (f *session) login(creds proxy.Credentials) error {
	if creds.Username == "" {
		f.app.malformedAuth("the app's AUTH response has no user name")
		return errNoUser
	}
	s := f.s
	// f.up is nil here: it is set only by a successful AUTH, go-smtp
	// refuses a second one (RFC 4954 §4), and STARTTLS drops it
	// (newSession).
	f.mu.Lock()
	defer f.mu.Unlock()
	var up *upstream
	var reply *gosmtp.SMTPError
	ok, err := s.LoginUpstream(f.ctx, creds, func(conn *tlsconf.Upstream, route policy.Route, creds proxy.Credentials) (bool, error) {
		var err error
		if up, err = start(conn, route, s.Dialer.EHLOName, f.timeout, f.overlong(conn.Host)); err != nil {
			return false, err
		}
		err = up.auth(route.User, creds)
		if se, isReply := isReply(err); isReply {
			reply = clip(se)
			return false, nil
		}
		if err != nil && err != errNoMechanism && err != errNoOAuthMechanism {
			err = &proxy.ProviderError{Msg: "the AUTH exchange with the provider failed: " + err.Error()}
		}
		return err == nil, err
	})
	var ie *proxy.InputError
	var re *proxy.RouteError
	var le *proxy.LimitError
	var ae *proxy.AuthError
	switch {
	case errors.As(err, &ae):
		// RFC 4954 §6: 535 5.7.8, the credentials are invalid; the text
		// says why.
		return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: proxy.Printable(ae.Text, 300)}
	case errors.As(err, &le):
		// RFC 5321 §3.8: 421, and the session ends.
		s.Deny(policy.ReasonLimit, "", "%s", le.Detail)
		f.app.end()
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many login attempts, closing the connection"}
	case errors.As(err, &ie):
		// RFC 4954 §4: 501, the response cannot be used.
		return &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2}, Message: ie.Text}
	case errors.As(err, &re):
		// RFC 4954 §6: 535 5.7.8, the credentials cannot be used; the
		// text says why.
		return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: re.Text}
	case err != nil:
		// RFC 4954 §6: 454 4.7.0, temporary authentication failure.
		return unavailable(454, err)
	case !ok:
		return reply
	}
	f.setUpstream(up)
	f.authed.Store(true)
	f.app.loggedIn.Store(true)
	return nil
}
