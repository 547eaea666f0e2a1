// Package certs makes throwaway certificate authorities and certificates,
// for tests and for `mailproxy demo`. Nothing it makes is meant to be
// trusted beyond the process or test that made it.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// chain is the DER of this CA (when it is an intermediate) and of the
	// intermediates above it, sent after the leaf by the certificates it
	// issues.
	chain [][]byte
}

// NewCA makes a CA named name, valid from an hour ago for ten years.
func NewCA(name string) (*CA, error) {
	return newCA(name, 10, nil)
}

// Intermediate makes a CA named name signed by ca. Certificates it issues
// carry the intermediates in their chain, so that a server sending them is
// verified against ca's root.
func (ca *CA) Intermediate(name string) (*CA, error) {
	return newCA(name, 5, ca)
}

// newCA makes a CA valid for years, signed by parent (nil: by itself).
func newCA(name string, years int, parent *CA) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"mailproxy test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Duration(years) * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, Key: key}
	if parent != nil {
		ca.chain = append([][]byte{der}, parent.chain...)
	}
	return ca, nil
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// PEM returns the CA certificate in PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// WriteFile writes the CA certificate as PEM into dir and returns its path.
func (ca *CA) WriteFile(dir string) (string, error) {
	p := filepath.Join(dir, "ca.pem")
	return p, os.WriteFile(p, ca.PEM(), 0o644)
}

// Leaf describes a certificate to issue.
type Leaf struct {
	// Names are DNS names or IP addresses for the SAN extension.
	Names []string
	// NotBefore and NotAfter default to an hour ago and a year ahead.
	NotBefore, NotAfter time.Time
	// RSA makes an RSA-2048 key instead of ECDSA P-256 (needed for servers
	// whose suites use RSA authentication, such as ECDHE-RSA).
	RSA bool
}

// Issue makes a server certificate signed by the CA.
func (ca *CA) Issue(l Leaf) (tls.Certificate, error) {
	c, err := issue(l, ca.Cert, ca.Key)
	c.Certificate = append(c.Certificate, ca.chain...)
	return c, err
}

// SelfSigned makes a server certificate that signs itself.
func SelfSigned(l Leaf) (tls.Certificate, error) {
	return issue(l, nil, nil)
}

func issue(l Leaf, parent *x509.Certificate, parentKey crypto.Signer) (tls.Certificate, error) {
	var key crypto.Signer
	var err error
	if l.RSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return tls.Certificate{}, err
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	cn := "localhost"
	if len(l.Names) > 0 {
		cn = l.Names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             l.NotBefore,
		NotAfter:              l.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if l.RSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, n := range l.Names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// WritePair writes a certificate and its key as PEM files into dir, named
// name.pem and name.key (mode 0600), and returns their paths.
func WritePair(dir, name string, c tls.Certificate) (certPath, keyPath string, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", err
	}
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("certs: no randomness: %v", err))
	}
	return n
}
