package pop3

import (
	"context"
	"encoding/base64"
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
	case errors.Is(err, errCancelled):
		// RFC 5034 §4: a "*" response cancels, the server answers -ERR.
		return false, f.write("-ERR AUTH cancelled\r\n")
	case errors.Is(err, errBadSASL):
		return false, f.write("-ERR Malformed SASL response\r\n")
	case errors.Is(err, errMechanism):
		return false, f.write("-ERR Unsupported mechanism: mailproxy offers SASL PLAIN and LOGIN\r\n")
	case errors.Is(err, proxy.ErrLineTooLong):
		return true, f.limit("a SASL response before login is over max_line (%d bytes)", f.s.Settings.Limits.MaxLine)
	}
	return true, f.readError(err)
}

var (
	errCancelled = errors.New("AUTH cancelled")
	errBadSASL   = errors.New("malformed SASL response")
	errMechanism = errors.New("unsupported mechanism")
)

// authenticate runs PLAIN (RFC 4616) or LOGIN with the app and returns
// the credentials it carried. arg is "MECHANISM [initial-response]".
func (f *session) authenticate(arg string) (proxy.Credentials, error) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp, err := f.saslStep(ir, hasIR, "")
		if err != nil {
			return proxy.Credentials{}, err
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			return proxy.Credentials{}, errBadSASL
		}
		return proxy.Credentials{Authzid: parts[0], Username: parts[1], Password: proxy.NewSecret(parts[2])}, nil
	case "LOGIN":
		user, err := f.saslStep(ir, hasIR, "Username:")
		if err != nil {
			return proxy.Credentials{}, err
		}
		pass, err := f.saslStep("", false, "Password:")
		if err != nil {
			return proxy.Credentials{}, err
		}
		if len(user) == 0 {
			return proxy.Credentials{}, errBadSASL
		}
		return proxy.Credentials{Username: string(user), Password: proxy.NewSecret(string(pass))}, nil
	}
	return proxy.Credentials{}, errMechanism
}

// saslStep returns the initial response if there is one ("=" meaning
// empty), or sends a "+ " challenge and reads the app's answer (RFC 5034
// §4).
func (f *session) saslStep(ir string, hasIR bool, challenge string) ([]byte, error) {
	line := ir
	if !hasIR {
		if err := f.write("+ %s\r\n", base64.StdEncoding.EncodeToString([]byte(challenge))); err != nil {
			return nil, err
		}
		l, err := proxy.ReadLine(f.br, f.s.Settings.Limits.MaxLine)
		if err != nil {
			return nil, err
		}
		line = string(l)
	}
	switch line {
	case "*":
		return nil, errCancelled
	case "=":
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, errBadSASL
	}
	return b, nil
}
