package tlsconf

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLocalCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mailproxy")
	cert, created, err := LoadOrCreateLocalCert(dir, []string{"192.168.1.10"})
	if err != nil || !created {
		t.Fatalf("first use: %v, created=%v", err, created)
	}
	leaf := cert.Leaf
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Error("the local certificate must be CA:FALSE")
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	for _, n := range []string{"localhost", "127.0.0.1", "::1", "192.168.1.10"} {
		if err := leaf.VerifyHostname(n); err != nil {
			t.Errorf("does not cover %s: %v", n, err)
		}
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d > LocalCertValidity+2*time.Hour {
		t.Errorf("valid for %v", d)
	}
	for name, mode := range map[string]os.FileMode{LocalKeyFile: 0o600, LocalCertFile: 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, %v; want %v", name, fi.Mode().Perm(), err, mode)
		}
	}
	// The file verifies the certificate an app is served.
	pem, _ := os.ReadFile(filepath.Join(dir, LocalCertFile))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the stored certificate is not PEM")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("the exported file does not verify the certificate: %v", err)
	}

	// Generated once: the next start reuses it.
	again, created, err := LoadOrCreateLocalCert(dir, []string{"192.168.1.10"})
	if err != nil || created || Fingerprint(again.Leaf) != Fingerprint(leaf) {
		t.Errorf("second use made a new certificate (%v, %v)", created, err)
	}
	// A new listener address: a new certificate naming old and new.
	grown, created, err := LoadOrCreateLocalCert(dir, []string{"10.0.0.5"})
	if err != nil || !created {
		t.Fatalf("new address: %v, %v", created, err)
	}
	for _, n := range []string{"192.168.1.10", "10.0.0.5", "localhost"} {
		if grown.Leaf.VerifyHostname(n) != nil {
			t.Errorf("regenerated certificate lacks %s", n)
		}
	}
}

func TestLocalServerConfigAllowsOldApps(t *testing.T) {
	cert, _, err := LoadOrCreateLocalCert(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := LocalServerConfig(cert)
	if cfg.MinVersion != tls.VersionTLS10 {
		t.Errorf("local MinVersion %x", cfg.MinVersion)
	}
	for _, s := range cfg.CipherSuites {
		if name := tls.CipherSuiteName(s); name[:10] != "TLS_ECDHE_" {
			t.Errorf("local suite %s", name)
		}
	}
}
