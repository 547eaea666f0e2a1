package proxy

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// The one login path of every front. No connection to the provider exists
// before the app has presented credentials (or, on a "*" listener, named
// its domain): LoginUpstream checks the credentials, routes them, dials
// the provider under the policy, and hands the fresh connection to the
// front's protocol exchange. Each attempt dials once; a failed attempt's
// connection is closed, so nothing waits at the provider on the app's
// behalf.

// Login is a front's provider-side exchange on a fresh connection: read
// the greeting (unless AfterSTARTTLS), learn the capabilities, log in with
// creds as route.User. creds are what the provider is to get: the app's
// credentials, or for an OAuth2 provider the app's user name with an
// access token (creds.Token) and no password. ok is the provider's
// verdict; err is anything that kept it from giving one (it is then shown
// to the app with Explain). The connection carries a deadline of
// command_timeout.
type Login func(conn *tlsconf.Upstream, route policy.Route, creds Credentials) (ok bool, err error)

// InputError is credentials mailproxy will not pass on; the app gets the
// protocol's "bad command" answer with Text.
type InputError struct{ Text string }

func (e *InputError) Error() string { return e.Text }

// RouteError is a login the policy will not route (audited); the app gets
// Text, a permanent refusal.
type RouteError struct {
	Text string
	Err  error
}

func (e *RouteError) Error() string { return e.Text }
func (e *RouteError) Unwrap() error { return e.Err }

// CheckCredentials refuses credentials holding NUL, CR or LF: passed on,
// a NUL would add a field to a SASL PLAIN message (logging in as someone
// else than the app named), and CR or LF would end the command early and
// start another.
func CheckCredentials(c Credentials) error {
	const bad = "\x00\r\n"
	switch {
	case strings.ContainsAny(c.Username, bad):
		return errors.New("the user name holds a NUL, CR or LF character")
	case strings.ContainsAny(c.Authzid, bad):
		return errors.New("the authorization identity holds a NUL, CR or LF character")
	case strings.ContainsAny(c.Password.Reveal(), bad):
		return errors.New("the password holds a NUL, CR or LF character")
	}
	return nil
}

// MaxLoginAttempts bounds the logins one session may try, whatever their
// outcome: apps try once, or twice (PLAIN, then LOGIN), and a session that
// keeps trying is guessing. The next attempt ends the session (a limit).
const MaxLoginAttempts = 5

// LoginUpstream logs the app in at its provider:
//   - a session's attempt past MaxLoginAttempts: *LimitError, which ends
//     the session (ServeLines, or the SMTP front) with a limit on record;
//   - credentials with NUL, CR or LF: *InputError, audited (reason input);
//   - a login the policy does not route: *RouteError, audited;
//   - for a provider with OAuth2, a login mailproxy refuses itself (wrong
//     local password, no grant, revoked grant): *AuthError, audited as
//     auth fail; a token endpoint that cannot be used: that error;
//   - a provider that cannot be reached, is refused by the policy, or
//     breaks its protocol: that error (the dialer audits a refusal; the
//     session's end records the others unless a later login succeeds);
//   - otherwise the provider's verdict, audited as auth ok or fail.
//
// On ok the connection is the front's, to relay; otherwise it is closed.
func (s *Session) LoginUpstream(ctx context.Context, creds Credentials, login Login) (bool, error) {
	s.loggingIn.Store(true)
	defer s.loggingIn.Store(false)
	s.mu.Lock()
	s.attempts++
	attempts := s.attempts
	s.mu.Unlock()
	if attempts > MaxLoginAttempts {
		// Each attempt may cost a connection to the provider and counts
		// towards its lockout of the account: the session ends.
		return false, &LimitError{
			Detail: fmt.Sprintf("the app tried to log in more than %d times in one session", MaxLoginAttempts),
			Say:    "too many login attempts",
		}
	}
	if err := CheckCredentials(creds); err != nil {
		s.Deny(policy.ReasonInput, "", "user \"%s\": %v; nothing was sent to the provider", policy.Escape(creds.Username), err)
		return false, &InputError{Text: err.Error() + "; mailproxy does not pass such credentials on"}
	}
	s.mu.Lock()
	s.user = policy.Escape(creds.Username)
	s.mu.Unlock()
	route, err := s.Route(creds.Username)
	if err != nil {
		return false, &RouteError{Text: ExplainRoute(err), Err: err}
	}
	s.mu.Lock()
	s.routedTo = route.Provider.Name
	s.mu.Unlock()
	var conn *tlsconf.Upstream
	var ok bool
	upCreds := creds
	err = onOwnStack(func() error {
		if route.Provider.OAuth2 != nil {
			// The password is the local one: it unlocks the grant and is
			// never sent. The provider gets an access token.
			tok, err := s.accessToken(ctx, route, creds)
			if err != nil {
				return err
			}
			upCreds = Credentials{Username: creds.Username, Token: tok}
		}
		dctx, cancel := context.WithTimeout(ctx, s.Settings.Limits.DialTimeout)
		defer cancel()
		var err error
		if conn, err = s.Dial(dctx, route); err != nil {
			return err
		}
		conn.SetDeadline(time.Now().Add(s.Settings.Limits.CommandTimeout))
		ok, err = login(conn, route, upCreds)
		return err
	})
	var ae *AuthError
	if errors.As(err, &ae) {
		s.Audit.Auth(creds.Username, false)
		return false, err
	}
	if conn == nil {
		s.failedLogin(err)
		return false, err
	}
	if err != nil {
		conn.Close()
		s.failedLogin(err)
		return false, err
	}
	s.Audit.Auth(creds.Username, ok)
	if !ok {
		conn.Close()
		if upCreds.Token != (Secret{}) {
			s.Settings.Grants.Rejected(route, upCreds.Token)
		}
		return false, nil
	}
	s.mu.Lock()
	s.loggedIn = true
	onLogin := s.onLogin
	s.mu.Unlock()
	if onLogin != nil {
		onLogin()
	}
	conn.SetDeadline(time.Time{})
	return true, nil
}

// onOwnStack runs f on a goroutine of its own and waits for it. The TLS
// handshake (ML-KEM key generation above all) grows a goroutine's stack
// to several times its idle size, and a stack shrinks back only slowly;
// run on the session's goroutine, which then relays for hours, that
// growth would be held by every idle session. A panic in f is raised
// again on the caller's goroutine, with f's stack, so that it ends the
// session like any other.
func onOwnStack(f func() error) error {
	var err error
	var p *panicked
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				p = &panicked{value: r, stack: debug.Stack()}
			}
		}()
		if loginHook != nil {
			loginHook()
		}
		err = f()
	}()
	<-done
	if p != nil {
		panic(p)
	}
	return err
}

// panicked is a panic carried from another goroutine, with its stack.
type panicked struct {
	value any
	stack []byte
}

func (p *panicked) String() string { return fmt.Sprint(p.value) }

// Recovered returns what was recovered from a panic, and its stack when it
// was carried from another goroutine (else stack is nil), for a front that
// recovers panics through a library (go-smtp).
func Recovered(r any) (value any, stack []byte) {
	if p, ok := r.(*panicked); ok {
		return p.value, p.stack
	}
	return r, nil
}

// loginHook, when set by a test, runs at the start of every login's
// provider exchange (to force a panic there).
var loginHook func()

// failedLogin keeps why a login attempt got no verdict, for session.end.
func (s *Session) failedLogin(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginErr = err
}

// accessToken gets the access token for an OAuth2 provider's login, under
// dial_timeout (the token endpoint is a provider host like the others).
func (s *Session) accessToken(ctx context.Context, route policy.Route, creds Credentials) (Secret, error) {
	if creds.Authzid != "" && creds.Authzid != creds.Username {
		// XOAUTH2 cannot carry it, and dropping it would log in as
		// someone else than the app asked for.
		return Secret{}, &AuthError{Text: "an authorization identity cannot be passed on with OAuth2"}
	}
	g := s.Settings.Grants
	if g == nil {
		return Secret{}, &AuthError{Text: fmt.Sprintf("provider %q uses OAuth2, and this mailproxy has no token store", route.Provider.Name)}
	}
	tctx, cancel := context.WithTimeout(ctx, s.Settings.Limits.DialTimeout)
	defer cancel()
	return g.AccessToken(tctx, route, creds.Password, s.Audit)
}

// LoginVia is LoginUpstream for the line-based fronts, whose exchange is
// "start on the fresh connection (greeting, capabilities), then log in":
// it also returns what start made, for the relay.
func LoginVia[U any](ctx context.Context, s *Session, creds Credentials,
	start func(*tlsconf.Upstream, policy.Route) (U, error), login func(U, Credentials) (bool, error)) (U, bool, error) {
	var up U
	ok, err := s.LoginUpstream(ctx, creds, func(conn *tlsconf.Upstream, route policy.Route, creds Credentials) (bool, error) {
		var err error
		if up, err = start(conn, route); err != nil {
			return false, err
		}
		return login(up, creds)
	})
	return up, ok, err
}
