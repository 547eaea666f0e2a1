package proxy

import (
	"fmt"
	"log/slog"
)

// Credentials are what an app logged in with. They are passed to the
// provider and nowhere else: the secret prints as "***" under fmt and slog,
// so even a careless log line cannot reveal it.
type Credentials struct {
	// Authzid is the SASL authorization identity, usually empty.
	Authzid string
	// Username is the login name as the app sent it.
	Username string
	// Password is the secret.
	Password Secret
	// Token is an OAuth2 access token to log in with at the provider
	// instead of a password (Password is then empty): LoginUpstream sets
	// it for a provider with [provider.oauth2]. The app never gives one.
	Token Secret
}

// Secret is a password or token. Use Reveal to get the value for the one
// place that needs it: the write to the provider.
type Secret struct{ v string }

// NewSecret wraps a secret value.
func NewSecret(v string) Secret { return Secret{v} }

// Reveal returns the secret for sending to the provider.
func (s Secret) Reveal() string { return s.v }

// String, GoString, Format and LogValue redact the secret.
func (s Secret) String() string             { return "***" }
func (s Secret) GoString() string           { return "proxy.Secret{***}" }
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, "***") }
func (s Secret) LogValue() slog.Value       { return slog.StringValue("***") }

// MarshalText writes "***": a secret is never serialised.
func (s Secret) MarshalText() ([]byte, error) { return []byte("***"), nil }
