package policy

import (
	"fmt"
	"net/url"
	"strconv"
)

// HTTPS is the protocol of a provider's OAuth2 endpoints (token and device
// authorization) as the dialer and the audit log name it. It is not a
// protocol mailproxy listens for.
const HTTPS Proto = "https"

// OAuth2 is a provider's OAuth2 registration and endpoints, from its
// [provider.oauth2] table. A provider that has one takes only OAuth2
// logins: the app's password unlocks a stored grant and is never sent.
type OAuth2 struct {
	// ClientID is the registered application; required.
	ClientID string
	// ClientSecret is the registration's secret, empty for a public
	// client. An installed application's secret is not confidential (RFC
	// 8252 §8.5), but it is never logged.
	ClientSecret string
	// AuthURL is where the user's browser authorizes mailproxy; mailproxy
	// never connects to it.
	AuthURL string
	// TokenURL is the token endpoint (RFC 6749 §3.2).
	TokenURL string
	// DeviceAuthURL is the device authorization endpoint (RFC 8628 §3.1);
	// empty when the provider has none.
	DeviceAuthURL string
	// Scopes are asked for at authorization.
	Scopes []string
}

// OAuth2Endpoint parses an https URL of an OAuth2 endpoint into the
// endpoint to dial, and checks that its host is on the provider's
// allowlist (a *Denied with reason non_provider_host otherwise).
func (p *Provider) OAuth2Endpoint(raw string) (Endpoint, error) {
	u, err := url.Parse(raw)
	if err == nil && u.User != nil {
		return Endpoint{}, fmt.Errorf("%q: an OAuth2 endpoint carries no user name or password (client_id and client_secret are keys of their own)", RedactURL(raw))
	}
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Fragment != "" {
		return Endpoint{}, fmt.Errorf("%q is not an https URL like https://login.example.com/token", RedactURL(raw))
	}
	host := NormalizeHost(u.Hostname())
	if !validHostName(host) {
		return Endpoint{}, fmt.Errorf("%q: %q is not a valid host name", RedactURL(raw), u.Hostname())
	}
	port := uint16(443)
	if s := u.Port(); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return Endpoint{}, fmt.Errorf("%q: bad port %q", RedactURL(raw), s)
		}
		port = uint16(n)
	}
	if !p.Allows(host) {
		return Endpoint{}, Deny(ReasonNonProviderHost, host, "provider %q: OAuth2 endpoint host %s is not in its hosts %v", p.Name, host, p.Hosts)
	}
	return Endpoint{Proto: HTTPS, Security: ImplicitTLS, Host: host, Port: port}, nil
}
