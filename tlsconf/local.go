package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"mailproxy/internal/atomicfile"
)

// The app-side ("local") TLS of a listener with local_security = "starttls"
// or "tls". Old mail apps may need TLS 1.0, so the local window starts
// there; this hop never leaves the machine (or the office LAN), and nothing
// here touches the upstream policy, which is built by Profile alone.

// localSuites are the suites offered to apps for TLS 1.0-1.2: ECDHE only,
// AEAD first, CBC-SHA for apps from before TLS 1.2.
var localSuites = append(append([]uint16{}, AEADSuites...), LegacySuites...)

// LocalServerConfig returns the TLS configuration for the app side.
func LocalServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS10,
		CipherSuites: localSuites,
	}
}

// LocalCertValidity is how long a generated local certificate is valid:
// 825 days, the most Apple's platforms accept for a certificate a user
// trusts by hand.
const LocalCertValidity = 825 * 24 * time.Hour

// Local certificate file names in the configuration directory.
const (
	LocalCertFile = "local-cert.pem"
	LocalKeyFile  = "local-key.pem"
)

// LocalNames are the names every generated local certificate covers.
var LocalNames = []string{"localhost", "127.0.0.1", "::1"}

// LoadOrCreateLocalCert returns the local certificate stored in dir, making
// a new one when there is none, when it expires within 30 days, or when it
// does not cover every name in names (listener addresses). The key is
// written with mode 0600 and the folder with 0700. created reports a new
// certificate.
func LoadOrCreateLocalCert(dir string, names []string) (cert tls.Certificate, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, LocalCertFile), filepath.Join(dir, LocalKeyFile)
	want := localNames(names)
	cert, err = tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case err == nil && covers(cert.Leaf, want) && time.Until(cert.Leaf.NotAfter) > 30*24*time.Hour:
		return cert, false, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return tls.Certificate{}, false, fmt.Errorf("reading the local certificate %s: %w", certPath, err)
	case err == nil:
		// Expiring, or a listener address it does not name: make a new
		// one with every name the old one had, plus the new ones.
		want = localNames(append(want, certNames(cert.Leaf)...))
	}
	cert, err = newLocalCert(want)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, false, err
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		return tls.Certificate{}, false, err
	}
	return cert, true, nil
}

// LocalCertChange is what LoadOrCreateLocalCert would change about the
// certificate stored in a folder.
type LocalCertChange struct {
	// Exists is false when there is no certificate yet (one is made
	// without asking: nothing trusts it yet).
	Exists bool
	// Missing are the listener names the stored certificate lacks.
	Missing []string
	// Expiring is true when it expires within 30 days.
	Expiring bool
	// Current is the stored certificate, when it exists.
	Current tls.Certificate
}

// Replaces reports whether LoadOrCreateLocalCert would replace an existing
// certificate, which the apps that trust it would then refuse.
func (c LocalCertChange) Replaces() bool { return c.Exists && (len(c.Missing) > 0 || c.Expiring) }

// InspectLocalCert reads the certificate stored in dir, without changing
// anything, and says what LoadOrCreateLocalCert(dir, names) would change.
func InspectLocalCert(dir string, names []string) (LocalCertChange, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, LocalCertFile), filepath.Join(dir, LocalKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return LocalCertChange{}, nil
	}
	if err != nil {
		return LocalCertChange{}, fmt.Errorf("reading the local certificate in %s: %w", dir, err)
	}
	ch := LocalCertChange{Exists: true, Current: cert, Expiring: time.Until(cert.Leaf.NotAfter) <= 30*24*time.Hour}
	for _, n := range localNames(names) {
		if cert.Leaf.VerifyHostname(n) != nil {
			ch.Missing = append(ch.Missing, n)
		}
	}
	return ch, nil
}

// LoadLocalCert loads a user-supplied local_cert and local_key.
func LoadLocalCert(certPath, keyPath string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading local_cert %s and local_key %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

// Fingerprint is the SHA-256 of a certificate, as openssl prints it
// ("AB:CD:...").
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// ListenerHost returns the host of a listener address worth naming in the
// local certificate ("" for unspecified addresses).
func ListenerHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return ""
	}
	return host
}

func localNames(extra []string) []string {
	names := slices.Clone(LocalNames)
	for _, n := range extra {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func covers(c *x509.Certificate, names []string) bool {
	for _, n := range names {
		if c.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func newLocalCert(names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "mailproxy local (" + host + ")", Organization: []string{"mailproxy"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(LocalCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
