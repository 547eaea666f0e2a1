package smtp

import "github.com/emersion/go-sasl"

// NewLoginServer lets the tests' provider offer AUTH LOGIN.
func NewLoginServer(authenticate func(user, pass string) error) sasl.Server {
	return newLoginServer(authenticate)
}
