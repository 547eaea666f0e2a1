package proxy

import (
	"errors"
	"fmt"
	"strings"

	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// ProviderError is a provider that broke its protocol or refused service
// after TLS. Its message may quote the provider (under TLS, so it is the
// provider's own word) and is shown to the app.
type ProviderError struct{ Msg string }

func (e *ProviderError) Error() string { return e.Msg }

// Explain words, for the app, why the provider cannot be used: a policy
// refusal with its reason, a provider's refusal, or a network failure. It
// never includes what a server said before TLS (docs/design.md, guarantee 3);
// the audit log has that.
func Explain(err error) string {
	var d *policy.Denied
	if errors.As(err, &d) {
		return fmt.Sprintf("mailproxy refused the provider (reason: %s): %s", d.Reason, Printable(d.Detail, 200))
	}
	var pe *ProviderError
	if errors.As(err, &pe) {
		return Printable(pe.Msg, 200)
	}
	var be *BusyError
	if errors.As(err, &be) {
		return Printable(be.Text, 200)
	}
	var re *tlsconf.RefusedError
	if errors.As(err, &re) {
		return "the provider refused the connection; try again later"
	}
	return "mailproxy cannot reach the provider: " + Printable(err.Error(), 200)
}

// ExplainRoute words a refused login route for the app.
func ExplainRoute(err error) string {
	var d *policy.Denied
	if errors.As(err, &d) {
		return fmt.Sprintf("mailproxy refused this login (reason: %s): %s", d.Reason, Printable(d.Detail, 200))
	}
	return Printable(err.Error(), 200)
}

// Printable replaces control characters in s and cuts it after max bytes,
// so that text from elsewhere cannot break a protocol line.
func Printable(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
