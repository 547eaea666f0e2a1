package pop3server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// authAllowed reports whether credentials may be sent on the connection
// as it is.
func (c *conn) authAllowed() bool {
	if c.isTLS() || c.srv.opts.AllowInsecureAuth {
		return true
	}
	c.reply("-ERR %sPlaintext authentication is not allowed: use STLS first", c.code("AUTH"))
	return false
}

// userCmd is USER (RFC 1939 §7).
func (c *conn) userCmd(name string) {
	c.user, c.hasUser = "", false
	switch {
	case !c.srv.caps[capUser]:
		c.reply("-ERR USER is not offered, use AUTH")
	case !c.authAllowed():
	case name == "":
		c.reply("-ERR USER needs a name")
	default:
		c.user, c.hasUser = name, true
		c.reply("+OK Send your password")
	}
}

// pass is PASS (RFC 1939 §7). The argument is the rest of the line: a
// password may hold spaces.
func (c *conn) pass(password string) {
	user, ok := c.user, c.hasUser
	c.user, c.hasUser = "", false
	switch {
	case !c.srv.caps[capUser]:
		c.reply("-ERR PASS is not offered, use AUTH")
	case !c.authAllowed():
	case !ok:
		c.reply("-ERR Send USER first")
	default:
		c.login(user, password)
	}
}

// auth is AUTH (RFC 5034 §4) with PLAIN (RFC 4616) and LOGIN. A bare AUTH
// lists the mechanisms, as RFC 1734 servers did and some clients expect.
func (c *conn) auth(arg string) {
	c.user, c.hasUser = "", false
	if !c.srv.caps[capSASL] {
		c.reply("-ERR AUTH is not offered")
		return
	}
	if !c.authAllowed() {
		return
	}
	if arg == "" {
		c.reply("+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.")
		return
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	var user, password string
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp, err := c.saslStep(ir, hasIR, "")
		if err != nil {
			c.saslFailed(err)
			return
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			c.saslFailed(errMalformed)
			return
		}
		if parts[0] != "" && parts[0] != parts[1] {
			c.reply("-ERR %sAuthorization identity not allowed", c.code("AUTH"))
			return
		}
		user, password = parts[1], parts[2]
	case "LOGIN":
		u, err := c.saslStep(ir, hasIR, "Username:")
		if err != nil {
			c.saslFailed(err)
			return
		}
		p, err := c.saslStep("", false, "Password:")
		if err != nil {
			c.saslFailed(err)
			return
		}
		user, password = string(u), string(p)
	default:
		c.reply("-ERR Unsupported mechanism")
		return
	}
	c.login(user, password)
}

var (
	errCancelled = errors.New("cancelled")
	errMalformed = errors.New("malformed")
)

// saslStep returns the initial response when there is one ("=" is empty),
// or sends the challenge and reads the client's response (RFC 5034 §4).
func (c *conn) saslStep(ir string, hasIR bool, challenge string) ([]byte, error) {
	if !hasIR {
		c.reply("+ %s", base64.StdEncoding.EncodeToString([]byte(challenge)))
		if err := c.flush(); err != nil {
			return nil, err
		}
		line, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if line == "*" {
			return nil, errCancelled
		}
		ir = line
	}
	if ir == "=" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(ir)
	if err != nil {
		return nil, errMalformed
	}
	return b, nil
}

func (c *conn) saslFailed(err error) {
	switch {
	case errors.Is(err, errCancelled):
		c.reply("-ERR AUTH cancelled")
	case errors.Is(err, errMalformed):
		c.reply("-ERR Malformed SASL response")
	case errors.Is(err, errLineTooLong):
		c.reply("-ERR Line too long")
		c.done = true
	default:
		c.done = true
	}
}

// login opens the maildrop and enters the TRANSACTION state.
func (c *conn) login(user, password string) {
	mbox, err := c.srv.opts.Backend.Login(user, password)
	if err != nil {
		c.reply("-ERR %s", c.loginError(err))
		return
	}
	msgs, err := mbox.Messages()
	if err != nil {
		c.srv.logf("listing a maildrop: %v", err)
		if err := mbox.Close(); err != nil {
			c.srv.logf("releasing a maildrop: %v", err)
		}
		c.reply("-ERR %sCannot read the maildrop", c.code("SYS/TEMP"))
		return
	}
	c.mbox, c.msgs, c.deleted = mbox, msgs, make([]bool, len(msgs))
	n, size := c.stat()
	c.reply("+OK Maildrop has %d messages (%d octets)", n, size)
}

// loginError words a failed login with its response code (RFC 2449 §8,
// RFC 3206). The backend's own error text never reaches the client.
func (c *conn) loginError(err error) string {
	switch {
	case errors.Is(err, ErrAuth):
		return c.code("AUTH") + "Invalid user name or password"
	case errors.Is(err, ErrInUse):
		return c.code("IN-USE") + "Maildrop is locked by another session"
	case errors.Is(err, ErrSysPerm):
		return c.code("SYS/PERM") + "Login not possible, contact the administrator"
	}
	if !errors.Is(err, ErrSysTemp) {
		c.srv.logf("login: %v", err)
	}
	return fmt.Sprintf("%sTemporary failure, try again later", c.code("SYS/TEMP"))
}
