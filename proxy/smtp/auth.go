package smtp

import (
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/proxy"
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
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			return f.login(proxy.Credentials{Authzid: identity, Username: user, Password: proxy.NewSecret(pass)})
		}), nil
	case sasl.Login:
		return newLoginServer(func(user, pass string) error {
			return f.login(proxy.Credentials{Username: user, Password: proxy.NewSecret(pass)})
		}), nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// errNoUser answers AUTH without a user name (RFC 4954 §4: 501).
var errNoUser = &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2},
	Message: "the AUTH response has no user name"}

// login logs in at the provider with the app's credentials: the route
// comes from the login (a "*" listener picks the provider by its domain),
// the connection is the one made before the greeting when it goes to the
// same place, else a new one. The provider's verdict is audited, once per
// attempt, and its refusal reaches the app as it gave it (usually 535).
func (f *session) login(creds proxy.Credentials) error {
	if creds.Username == "" {
		return errNoUser
	}
	s := f.s
	route, err := s.Route(creds.Username)
	if err != nil {
		// Audited by Route. RFC 4954 §6: 535 5.7.8, the credentials
		// cannot be used; the text says why.
		return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: proxy.ExplainRoute(err)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if up := f.up; up != nil && (up.lost != "" || up.route.Provider != route.Provider || up.route.Endpoint != route.Endpoint) {
		up.kill("the login goes elsewhere")
		f.up = nil
	}
	fresh := f.up == nil
	if fresh {
		up, err := connect(f.ctx, s, route, f.timeout)
		if err != nil {
			// RFC 4954 §6: 454 4.7.0, temporary authentication failure.
			return unavailable(454, err)
		}
		f.setUpstream(up)
	}
	f.up.route = route
	err = f.up.auth(route.User, creds)
	if _, reply := isReply(err); err != nil && !reply && err != errNoMechanism && !fresh {
		// The connection made before the greeting waited for the app and
		// the provider may have closed it meanwhile (its own timeout):
		// one new connection, one more try, rather than an error for
		// mailproxy's waiting.
		f.up.kill("the provider closed the waiting connection")
		up, cerr := connect(f.ctx, s, route, f.timeout)
		if cerr != nil {
			return unavailable(454, cerr)
		}
		f.setUpstream(up)
		f.up.route = route
		err = f.up.auth(route.User, creds)
	}
	if err == nil {
		s.Audit.Auth(creds.Username, true)
		f.authed.Store(true)
		return nil
	}
	if se, ok := isReply(err); ok {
		s.Audit.Auth(creds.Username, false)
		if se.Code == 421 {
			f.up.kill("the provider closed the session with 421")
		}
		return se
	}
	if err != errNoMechanism {
		// The connection failed, or the exchange went wrong (a
		// challenge LOGIN does not expect): the client and the provider
		// may be out of step, so the connection goes.
		f.up.kill("AUTH failed: " + err.Error())
		err = &proxy.ProviderError{Msg: "the AUTH exchange with the provider failed: " + err.Error()}
	}
	return unavailable(454, err)
}
