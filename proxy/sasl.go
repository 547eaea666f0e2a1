package proxy

import (
	"encoding/base64"
	"errors"
	"strings"
)

// The SASL exchange of IMAP AUTHENTICATE (RFC 9051 §6.2.2, RFC 4959) and
// POP3 AUTH (RFC 5034) is the same: "+ <base64 challenge>" from the server,
// one line of base64 from the app, "*" to cancel, "=" for an empty initial
// response. Only mechanisms that carry the password itself can be relayed:
// PLAIN (RFC 4616) and LOGIN. A challenge-response mechanism (CRAM-MD5,
// SCRAM, APOP) would give mailproxy a digest the provider cannot check.

// Errors of a SASL exchange with the app.
var (
	ErrSASLCancelled = errors.New("authentication cancelled by the app")
	ErrSASLMalformed = errors.New("malformed SASL response")
	ErrSASLMechanism = errors.New("unsupported SASL mechanism")
)

// Challenge sends a challenge to the app ("" for an empty one) and returns
// the line it answers with.
type Challenge func(challenge string) (line string, err error)

// ReadSASL runs mechanism mech with the app and returns the credentials it
// carried. initial is the initial response (RFC 4959), or nil.
func ReadSASL(mech string, initial *string, challenge Challenge) (Credentials, error) {
	step := func(c string, ir *string) ([]byte, error) {
		line := ""
		if ir != nil {
			line = *ir
		} else {
			l, err := challenge(base64.StdEncoding.EncodeToString([]byte(c)))
			if err != nil {
				return nil, err
			}
			line = l
		}
		switch line {
		case "*":
			return nil, ErrSASLCancelled
		case "=":
			return nil, nil
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, ErrSASLMalformed
		}
		return b, nil
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		resp, err := step("", initial)
		if err != nil {
			return Credentials{}, err
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 || parts[1] == "" {
			return Credentials{}, ErrSASLMalformed
		}
		return Credentials{Authzid: parts[0], Username: parts[1], Password: NewSecret(parts[2])}, nil
	case "LOGIN":
		user, err := step("Username:", initial)
		if err != nil {
			return Credentials{}, err
		}
		pass, err := step("Password:", nil)
		if err != nil {
			return Credentials{}, err
		}
		if len(user) == 0 {
			return Credentials{}, ErrSASLMalformed
		}
		return Credentials{Username: string(user), Password: NewSecret(string(pass))}, nil
	}
	return Credentials{}, ErrSASLMechanism
}
