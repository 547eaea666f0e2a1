package policy

import "fmt"

// Reason is the one-word cause of a refusal, as written in the `reason` field
// of a `policy.denied` audit event. A Reason is also an error, so that
// errors.Is(err, policy.ReasonCipher) tells what kind of refusal err is.
type Reason string

// The reasons, one for each kind of refusal (docs/design.md, audit contract).
const (
	// ReasonNonProviderHost: a host or login domain outside the provider's
	// allowlist, or a login no provider serves.
	ReasonNonProviderHost Reason = "non_provider_host"
	// ReasonPrivateAddress: a provider name resolved to a loopback, private,
	// link-local or otherwise non-public address.
	ReasonPrivateAddress Reason = "private_address"
	// ReasonTLSVersion: the server's TLS version is outside the window.
	ReasonTLSVersion Reason = "tls_version"
	// ReasonCipher: no ECDHE suite in common, or a suite or key exchange the
	// policy does not allow.
	ReasonCipher Reason = "cipher"
	// ReasonCertificate: the chain or host name did not verify.
	ReasonCertificate Reason = "certificate"
	// ReasonPin: the certificate's key matches none of the configured pins.
	ReasonPin Reason = "pin"
	// ReasonSTARTTLS: STARTTLS missing, refused, or abused (bytes injected
	// after the reply, IMAP PREAUTH on a STARTTLS port).
	ReasonSTARTTLS Reason = "starttls"
	// ReasonHandshake: a TLS failure that none of the reasons above names.
	ReasonHandshake Reason = "handshake"
	// ReasonRemoteClient: a client connected from outside allow_clients.
	ReasonRemoteClient Reason = "remote_client"
	// ReasonLimit: a size, count or time limit was reached.
	ReasonLimit Reason = "limit"
	// ReasonInput: the app's credentials hold bytes that must not reach
	// the provider (NUL, CR, LF: they would change the meaning of the
	// SASL message or the command that carries them).
	ReasonInput Reason = "input"
	// ReasonPlaintextAuth: the app tried to log in without TLS on a LAN
	// listener that does not allow it (allow_plaintext_auth).
	ReasonPlaintextAuth Reason = "plaintext_auth"
)

func (r Reason) Error() string { return string(r) }

// Denied is a refusal by the policy. It unwraps to its Reason, so
// errors.Is(err, ReasonPin) works through any wrapping.
type Denied struct {
	Reason Reason
	// Host is the host, domain or address the refusal is about, if any.
	Host string
	// Detail says what happened in words a user can act on. It is built by
	// mailproxy from facts it checked, never from credentials or message
	// content. Fronts may show it to the app.
	Detail string
	// Quote is what the remote server said, when that explains the
	// refusal (a refused STARTTLS). It goes to the audit log only: it may
	// be text sent before TLS, which nobody vouches for and which must
	// never reach the app.
	Quote string
	// Facts are further facts for the audit log only, too technical for
	// the app (the hashes of a changed trust anchor).
	Facts string
}

// Deny returns a *Denied for reason about host, with a formatted detail.
func Deny(reason Reason, host, format string, args ...any) *Denied {
	return &Denied{Reason: reason, Host: host, Detail: fmt.Sprintf(format, args...)}
}

func (d *Denied) Error() string {
	if d.Host != "" {
		return fmt.Sprintf("refused (%s) for %s: %s", d.Reason, d.Host, d.AuditDetail())
	}
	return fmt.Sprintf("refused (%s): %s", d.Reason, d.AuditDetail())
}

// AuditDetail is the detail as the audit log records it: with the server's
// words, if any.
func (d *Denied) AuditDetail() string {
	s := d.Detail
	if d.Facts != "" {
		s += " (" + d.Facts + ")"
	}
	if d.Quote == "" {
		return s
	}
	return fmt.Sprintf("%s (the server said: %q)", s, d.Quote)
}

func (d *Denied) Unwrap() error { return d.Reason }
