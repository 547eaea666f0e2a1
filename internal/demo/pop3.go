package demo

import (
	"crypto/tls"

	"mailproxy/internal/certs"
)

// startPOP3 is filled in once internal/pop3server exists.
func (p *Provider) startPOP3(tlsConf *tls.Config, ca *certs.CA) error {
	return nil
}
