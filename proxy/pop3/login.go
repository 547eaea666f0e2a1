package pop3

import (
	"context"
	"errors"

	"mailproxy/proxy"
)

// login logs in at the provider with the app's credentials and relays its
// answer. On success the relay runs until the session ends; on a refusal
// the session stays in the AUTHORIZATION state for another try, as RFC
// 1939 §7 allows.
func (f *session) login(ctx context.Context, creds proxy.Credentials) (bool, error) {
	s := f.s
	var res *loginResult
	up, ok, err := proxy.LoginVia(ctx, s, creds, start, func(u *upstream, c proxy.Credentials) (bool, error) {
		var err error
		res, err = u.login(c)
		return err == nil && res.ok, err
	})
	var le *proxy.LimitError
	if errors.As(err, &le) {
		return false, err // the session ends with an -ERR
	}
	if err != nil {
		return false, f.write("%s\r\n", loginRefusal(err))
	}
	// The provider's own line, response code and all (RFC 2449 §8,
	// RFC 3206): [AUTH], [IN-USE], [SYS/TEMP] and [SYS/PERM] mean
	// something to the app.
	if err := f.write("%s\r\n", res.line); err != nil {
		return true, err
	}
	if !ok {
		return false, nil
	}
	// Logged in: from here on the provider speaks to the app directly.
	return true, f.p.Relay(up.conn.Conn, up.br, nil)
}

// loginRefusal is the app's -ERR for a login that got no verdict from the
// provider (RFC 3206 codes: [AUTH] for credentials, [SYS/PERM] for a login
// mailproxy will never route, [SYS/TEMP] for a provider to try later).
func loginRefusal(err error) string {
	var ie *proxy.InputError
	var re *proxy.RouteError
	var le *errLogin
	var ae *proxy.AuthError
	switch {
	case errors.As(err, &ae):
		return "-ERR [AUTH] " + proxy.Printable(ae.Text, 300)
	case errors.As(err, &ie):
		return "-ERR [AUTH] " + ie.Text
	case errors.As(err, &re):
		return "-ERR [SYS/PERM] " + re.Text
	case errors.As(err, &le):
		return "-ERR [" + le.code + "] " + le.msg
	}
	return "-ERR [SYS/TEMP] " + proxy.Explain(err)
}
