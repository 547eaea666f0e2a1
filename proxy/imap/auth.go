package imap

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"mailproxy/proxy"
)

// errCancelled is an AUTHENTICATE the app cancelled with "*".
var errCancelled = errors.New("AUTHENTICATE cancelled")

// authenticate runs AUTHENTICATE PLAIN or LOGIN with the app (RFC 9051
// §6.2.2, RFC 4959 for the initial response, RFC 4616 for PLAIN) and
// returns the credentials it carried. Only PLAIN and LOGIN are offered:
// challenge mechanisms such as CRAM-MD5 cannot be relayed, because the
// provider needs the password itself.
func (f *session) authenticate(c *command) (proxy.Credentials, error) {
	if len(c.args) < 1 || len(c.args) > 2 || c.args[0].kind != atomArg {
		return proxy.Credentials{}, &errSyntax{tag: c.tag, msg: "AUTHENTICATE takes a mechanism and an optional initial response"}
	}
	mech := strings.ToUpper(c.args[0].s)
	var ir *string
	if len(c.args) == 2 {
		s, ok := c.args[1].astring()
		if !ok {
			return proxy.Credentials{}, &errSyntax{tag: c.tag, msg: "bad initial response"}
		}
		ir = &s
	}
	switch mech {
	case "PLAIN":
		resp, err := f.saslStep(ir, "")
		if err != nil {
			return proxy.Credentials{}, err
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			return proxy.Credentials{}, errBadSASL
		}
		return proxy.Credentials{Authzid: parts[0], Username: parts[1], Password: proxy.NewSecret(parts[2])}, nil
	case "LOGIN":
		user, err := f.saslStep(ir, "Username:")
		if err != nil {
			return proxy.Credentials{}, err
		}
		pass, err := f.saslStep(nil, "Password:")
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

var (
	errBadSASL   = errors.New("malformed SASL response")
	errMechanism = errors.New("unsupported mechanism")
)

// saslStep returns the initial response if there is one ("=" meaning
// empty), or sends a "+" challenge and reads the app's answer.
func (f *session) saslStep(ir *string, challenge string) ([]byte, error) {
	var line string
	if ir != nil {
		line = *ir
	} else {
		if _, err := fmt.Fprintf(f.client(), "+ %s\r\n", base64.StdEncoding.EncodeToString([]byte(challenge))); err != nil {
			return nil, err
		}
		l, err := proxy.ReadLine(f.br, f.s.Settings.Limits.MaxLine)
		if err != nil {
			if errors.Is(err, proxy.ErrLineTooLong) {
				return nil, errTooBig
			}
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
