package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strings"

	"mailproxy/policy"
)

// AEADSuites are the TLS 1.2 suites allowed for every provider: ECDHE key
// exchange with an AEAD cipher.
var AEADSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, // 0xc02b
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,   // 0xc02f
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, // 0xc02c
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,   // 0xc030
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,  // 0xcca9
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,    // 0xcca8
}

// LegacySuites are added only for a provider whose min_tls is below 1.2:
// still ECDHE, with the CBC-SHA ciphers TLS 1.0 and 1.1 servers have.
var LegacySuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, // 0xc009
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, // 0xc00a
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,   // 0xc013
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,   // 0xc014
}

// Profile is the TLS requirement of one provider, as the dialer applies it.
// Its fields mean what policy.TLSPolicy's do.
type Profile struct {
	// MinVersion and MaxVersion bound the version; zero means TLS 1.2 and
	// TLS 1.3. Nothing below TLS 1.0 is ever possible.
	MinVersion, MaxVersion uint16
	// Roots verifies the provider's chain; nil means the system roots.
	Roots *x509.CertPool
	// Pins are SHA-256 hashes of acceptable SubjectPublicKeyInfos; when
	// non-empty, the leaf must match one.
	Pins [][sha256.Size]byte
	// Provider is the name of the provider it is for, for the audit.
	Provider string
	// TOFU applies trust on first use of the trust anchor, when the
	// dialer has a store and there are no pins (tofu.go).
	TOFU bool
}

// ProfileFor returns the profile of a provider from its TLS policy, which
// the configuration parsed when it was loaded: it reads no file and parses
// nothing. The version window is checked again, so that a hand-built or
// zero policy can never mean something weaker than the documented default.
func ProfileFor(p *policy.Provider) (*Profile, error) {
	t := p.TLS
	pr := &Profile{MinVersion: t.MinVersion, MaxVersion: t.MaxVersion, Roots: t.Roots, Pins: t.Pins, Provider: p.Name, TOFU: !t.NoTOFU}
	if err := pr.validate(); err != nil {
		return nil, fmt.Errorf("provider %q: %w", p.Name, err)
	}
	return pr, nil
}

// LoadRoots reads a PEM file of CA certificates. The configuration calls it
// when it is loaded, never the dialer.
func LoadRoots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ca_file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ParsePin parses "sha256/<base64 of the SHA-256 of the SPKI>".
func ParsePin(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	b64, ok := strings.CutPrefix(s, "sha256/")
	if !ok {
		return h, fmt.Errorf("pin %q: want sha256/<base64>", s)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != sha256.Size {
		return h, fmt.Errorf("pin %q: the part after sha256/ must be the base64 of 32 bytes", s)
	}
	copy(h[:], b)
	return h, nil
}

// SPKIHash returns the SHA-256 of a certificate's SubjectPublicKeyInfo.
func SPKIHash(c *x509.Certificate) [sha256.Size]byte {
	return sha256.Sum256(c.RawSubjectPublicKeyInfo)
}

// FormatPin spells a hash the way the pins setting takes it.
func FormatPin(h [sha256.Size]byte) string {
	return "sha256/" + base64.StdEncoding.EncodeToString(h[:])
}

func (pr *Profile) min() uint16 {
	if pr.MinVersion == 0 {
		return tls.VersionTLS12
	}
	return pr.MinVersion
}

func (pr *Profile) max() uint16 {
	if pr.MaxVersion == 0 {
		return tls.VersionTLS13
	}
	return pr.MaxVersion
}

func (pr *Profile) validate() error {
	lo, hi := pr.min(), pr.max()
	if lo < tls.VersionTLS10 || lo > tls.VersionTLS13 {
		return fmt.Errorf("min_tls %s is outside TLS1.0-TLS1.3", policy.TLSVersionName(lo))
	}
	if hi != tls.VersionTLS12 && hi != tls.VersionTLS13 {
		return fmt.Errorf("max_tls must be 1.2 or 1.3, not %s", policy.TLSVersionName(hi))
	}
	if lo > hi {
		return fmt.Errorf("min_tls %s is above max_tls %s", policy.TLSVersionName(lo), policy.TLSVersionName(hi))
	}
	return nil
}

// Suites returns the TLS 1.0-1.2 suites the profile allows.
func (pr *Profile) Suites() []uint16 {
	s := slices.Clone(AEADSuites)
	if pr.min() < tls.VersionTLS12 {
		s = append(s, LegacySuites...)
	}
	return s
}

// ClientConfig returns the configuration for a handshake with serverName.
func (pr *Profile) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		ServerName:   serverName,
		RootCAs:      pr.Roots,
		MinVersion:   pr.min(),
		MaxVersion:   pr.max(),
		CipherSuites: pr.Suites(),
		// No session cache: every connection is a full, checked handshake.
		ClientSessionCache: nil,
		// Runs after Go's own chain and name verification, and also on
		// resumption; VerifyPeerCertificate would not.
		VerifyConnection: func(cs tls.ConnectionState) error {
			return pr.verifyConnection(serverName, cs)
		},
	}
}

func (pr *Profile) verifyConnection(host string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return policy.Deny(policy.ReasonCertificate, host, "the server sent no certificate")
	}
	if len(cs.VerifiedChains) == 0 {
		// Go verified nothing: never accept that.
		return policy.Deny(policy.ReasonCertificate, host, "the certificate chain was not verified")
	}
	if len(pr.Pins) == 0 {
		return nil
	}
	got := SPKIHash(cs.PeerCertificates[0])
	if slices.Contains(pr.Pins, got) {
		return nil
	}
	return policy.Deny(policy.ReasonPin, host,
		"the certificate's key %s matches none of the %d configured pins", FormatPin(got), len(pr.Pins))
}

// CheckState checks a completed handshake against the profile: the version
// inside the window, an allowed suite (any TLS 1.3 suite), and an ECDHE or
// hybrid key exchange (CurveID set). It returns the facts for the audit log.
func (pr *Profile) CheckState(host string, cs tls.ConnectionState) (policy.TLSFacts, error) {
	f := policy.TLSFacts{Provider: pr.Provider, Host: host, Version: cs.Version, CipherSuite: cs.CipherSuite, Group: cs.CurveID,
		Verified: len(cs.VerifiedChains) > 0, Pinned: len(pr.Pins) > 0, Legacy: cs.Version < tls.VersionTLS12}
	if len(cs.PeerCertificates) > 0 {
		h := SPKIHash(cs.PeerCertificates[0])
		f.SPKISHA256 = base64.StdEncoding.EncodeToString(h[:])
		f.NotAfter = cs.PeerCertificates[0].NotAfter
	}
	switch {
	case !cs.HandshakeComplete:
		return f, policy.Deny(policy.ReasonHandshake, host, "the handshake did not complete")
	case cs.Version < pr.min() || cs.Version > pr.max():
		return f, policy.Deny(policy.ReasonTLSVersion, host, "negotiated %s, outside the allowed %s-%s",
			policy.TLSVersionName(cs.Version), policy.TLSVersionName(pr.min()), policy.TLSVersionName(pr.max()))
	case cs.Version < tls.VersionTLS13 && !slices.Contains(pr.Suites(), cs.CipherSuite):
		return f, policy.Deny(policy.ReasonCipher, host, "negotiated suite %s is not allowed", tls.CipherSuiteName(cs.CipherSuite))
	case cs.CurveID == 0:
		return f, policy.Deny(policy.ReasonCipher, host, "the key exchange is not ECDHE (no group negotiated)")
	case !f.Verified:
		return f, policy.Deny(policy.ReasonCertificate, host, "the certificate chain was not verified")
	}
	return f, nil
}
