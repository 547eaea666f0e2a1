// Package tlsconf is the only place in mailproxy that builds a *tls.Config.
//
// Upstream (towards the provider) it enforces the policy of docs/design.md: TLS
// versions inside the provider's window and never SSLv3; ECDHE key exchange
// only (the six ECDHE AEAD suites, plus the four ECDHE CBC-SHA suites only
// when a legacy provider's window goes below TLS 1.2; TLS 1.3 is ECDHE or
// hybrid ML-KEM by construction); the certificate chain and host name always
// verified; optional SPKI pins, checked in VerifyConnection so that they
// also hold on resumption. After the handshake the negotiated state is
// checked again, because Go does not yet know the key exchange group inside
// VerifyConnection for TLS 1.2.
//
// It dials: resolving the provider's name, checking every address against
// the policy at every dial, then implicit TLS or STARTTLS (IMAP, POP3, SMTP)
// done so that it fails closed and cannot be injected into.
//
// Every refusal is a *policy.Denied whose Reason names what was wrong. This
// package never skips certificate verification and has no plaintext mode.
package tlsconf
