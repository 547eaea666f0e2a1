package pop3

import (
	"context"
	"errors"
	"strings"

	"mailproxy/proxy"
)

// userCmd takes USER (RFC 1939 §7). On a "*" listener the login's route
// is checked now, so that the app is not asked for a password mailproxy
// would not send anywhere.
func (f *session) userCmd(name string) error {
	f.user, f.hasUser = "", false
	if name == "" {
		return f.write("-ERR USER needs a name\r\n")
	}
	if _, err := f.s.Route(name); err != nil {
		return f.write("-ERR [SYS/PERM] %s\r\n", proxy.ExplainRoute(err))
	}
	f.user, f.hasUser = name, true
	return f.write("+OK Send your password\r\n")
}

// pass takes PASS (RFC 1939 §7): the password is the rest of the line,
// spaces included.
func (f *session) pass(ctx context.Context, password string) (bool, error) {
	user, ok := f.user, f.hasUser
	f.user, f.hasUser = "", false
	if !ok {
		return false, f.write("-ERR Send USER first\r\n")
	}
	return f.login(ctx, proxy.Credentials{Username: user, Password: proxy.NewSecret(password)})
}

// auth runs AUTH (RFC 5034 §4). A bare AUTH lists the mechanisms, as RFC
// 1734 servers did and Outlook still asks.
func (f *session) auth(ctx context.Context, arg string) (bool, error) {
	f.user, f.hasUser = "", false
	if arg == "" {
		return false, f.write("+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n")
	}
	creds, err := f.authenticate(arg)
	switch {
	case err == nil:
		return f.login(ctx, creds)
	case errors.Is(err, proxy.ErrSASLCancelled):
		// RFC 5034 §4: a "*" response cancels, the server answers -ERR.
		return false, f.write("-ERR AUTH cancelled\r\n")
	case errors.Is(err, proxy.ErrSASLMalformed):
		return false, f.write("-ERR Malformed SASL response\r\n")
	case errors.Is(err, proxy.ErrSASLMechanism):
		return false, f.write("-ERR Unsupported mechanism: mailproxy offers SASL PLAIN and LOGIN\r\n")
	}
	return false, err
}

// authenticate runs PLAIN or LOGIN with the app (RFC 5034 §4) and returns
// the credentials it carried; see proxy.ReadSASL. arg is "MECHANISM
// [initial-response]".
func (f *session) authenticate(arg string) (proxy.Credentials, error) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	var initial *string
	if hasIR {
		initial = &ir
	}
	return proxy.ReadSASL(mech, initial, func(challenge string) (string, error) {
		if err := f.write("+ %s\r\n", challenge); err != nil {
			return "", err
		}
		l, err := f.p.ReadLine()
		return string(l), err
	})
}
