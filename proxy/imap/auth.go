package imap

import (
	"mailproxy/proxy"
)

// authenticate runs AUTHENTICATE PLAIN or LOGIN with the app (RFC 9051
// §6.2.2, RFC 4959 for the initial response) and returns the credentials
// it carried; see proxy.ReadSASL.
func (f *session) authenticate(c *command) (proxy.Credentials, error) {
	if len(c.args) < 1 || len(c.args) > 2 || c.args[0].kind != atomArg {
		return proxy.Credentials{}, &errSyntax{tag: c.tag, msg: "AUTHENTICATE takes a mechanism and an optional initial response"}
	}
	var ir *string
	if len(c.args) == 2 {
		s, ok := c.args[1].astring()
		if !ok {
			return proxy.Credentials{}, &errSyntax{tag: c.tag, msg: "bad initial response"}
		}
		ir = &s
	}
	return proxy.ReadSASL(c.args[0].s, ir, func(challenge string) (string, error) {
		if err := f.write("+ %s\r\n", challenge); err != nil {
			return "", err
		}
		l, err := f.p.ReadLine()
		return string(l), err
	})
}
