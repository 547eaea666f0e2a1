package pop3

import (
	"context"
	"errors"
	"time"

	"mailproxy/proxy"
)

// login logs in at the provider with the app's credentials and relays its
// answer. On success the relay runs until the session ends; on a refusal
// the session stays in the AUTHORIZATION state for another try, as RFC
// 1939 §7 allows.
func (f *session) login(ctx context.Context, creds proxy.Credentials) (bool, error) {
	s := f.s
	route, err := s.Route(creds.Username)
	if err != nil {
		return false, f.write("-ERR [SYS/PERM] %s\r\n", proxy.ExplainRoute(err))
	}
	var res *loginResult
	for {
		fresh := false
		if f.up == nil || f.up.route.Provider != route.Provider || f.up.route.Endpoint != route.Endpoint {
			f.closeUp()
			up, err := connect(ctx, s, route)
			if err != nil {
				return false, f.write("-ERR [SYS/TEMP] %s\r\n", proxy.Explain(err))
			}
			f.up, fresh = up, true
		}
		f.up.route = route
		f.up.deadline(s)
		res, err = f.up.login(creds)
		if err == nil {
			break
		}
		f.closeUp()
		// A provider may close the connection after a failed login, or
		// after a while in the AUTHORIZATION state: then it has not seen
		// this attempt, and one new connection is worth a try.
		if errors.Is(err, errGone) && !fresh {
			continue
		}
		var le *errLogin
		if errors.As(err, &le) {
			return false, f.write("-ERR [%s] %s\r\n", le.code, le.msg)
		}
		return false, f.write("-ERR [SYS/TEMP] %s\r\n", proxy.Explain(err))
	}
	s.Audit.Auth(creds.Username, res.ok)
	// The provider's own line, response code and all (RFC 2449 §8,
	// RFC 3206): [AUTH], [IN-USE], [SYS/TEMP] and [SYS/PERM] mean
	// something to the app.
	if err := f.write("%s\r\n", res.line); err != nil {
		return true, err
	}
	if !res.ok {
		return false, nil
	}
	// Logged in: from here on the provider speaks to the app directly.
	s.Client.SetDeadline(time.Time{})
	f.up.conn.SetDeadline(time.Time{})
	return true, s.Relay(s.Client, proxy.Pending(f.br), f.up.conn, proxy.Pending(f.up.br), nil)
}

// closeUp drops the provider connection, if any.
func (f *session) closeUp() {
	if f.up != nil {
		f.up.conn.Close()
		f.up = nil
	}
}
