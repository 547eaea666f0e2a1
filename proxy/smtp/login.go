package smtp

import "github.com/emersion/go-sasl"

// loginServer is the server side of the LOGIN SASL mechanism
// (draft-murchison-sasl-login-00), which go-sasl has only as a client. Old
// apps, printers and scanners often offer nothing else. The challenges are
// the customary "Username:" and "Password:"; an initial response (RFC 4954
// §4) is the user name.
type loginServer struct {
	authenticate func(user, pass string) error
	step         int
	user         string
}

func newLoginServer(authenticate func(user, pass string) error) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

// The steps of an exchange.
const (
	loginStart = iota
	loginWantUser
	loginWantPass
	loginDone
)

func (a *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch a.step {
	case loginStart:
		if response == nil {
			a.step = loginWantUser
			return []byte("Username:"), false, nil
		}
		a.user, a.step = string(response), loginWantPass
		return []byte("Password:"), false, nil
	case loginWantUser:
		a.user, a.step = string(response), loginWantPass
		return []byte("Password:"), false, nil
	case loginWantPass:
		a.step = loginDone
		return nil, true, a.authenticate(a.user, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
