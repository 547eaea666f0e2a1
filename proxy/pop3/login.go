package pop3

import (
	"context"
	"errors"
	"time"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// login logs in at the provider with the app's credentials and relays its
// answer. On success the relay runs until the session ends; on a refusal
// the session stays in the AUTHORIZATION state for another try, as RFC
// 1939 §7 allows.
func (f *session) login(ctx context.Context, creds proxy.Credentials) (bool, error) {
	s := f.s
	var up *upstream
	var res *loginResult
	ok, err := s.LoginUpstream(ctx, creds, func(conn *tlsconf.Upstream, route policy.Route) (bool, error) {
		var err error
		if up, err = start(conn, route); err != nil {
			return false, err
		}
		if res, err = up.login(creds); err != nil {
			return false, err
		}
		return res.ok, nil
	})
	var ie *proxy.InputError
	var re *proxy.RouteError
	var le *errLogin
	switch {
	case errors.As(err, &ie):
		return false, f.write("-ERR [AUTH] %s\r\n", ie.Text)
	case errors.As(err, &re):
		return false, f.write("-ERR [SYS/PERM] %s\r\n", re.Text)
	case errors.As(err, &le):
		return false, f.write("-ERR [%s] %s\r\n", le.code, le.msg)
	case err != nil:
		return false, f.write("-ERR [SYS/TEMP] %s\r\n", proxy.Explain(err))
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
	appPending, upPending := f.p.Handover(), proxy.Pending(up.br)
	conn := up.conn
	f.p, up = nil, nil
	s.Client.SetDeadline(time.Time{})
	return true, s.Relay(s.Client, appPending, conn.Conn, upPending, nil)
}
