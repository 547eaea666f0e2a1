package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// serveTLS runs a TLS server on 127.0.0.1 presenting cert, and returns its
// port.
func serveTLS(t *testing.T, cert tls.Certificate) int {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if c.(*tls.Conn).Handshake() == nil {
			io.Copy(io.Discard, c)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func newCA(t *testing.T, name string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// dialIMAP dials provider "p" of c as mailproxy would.
func dialIMAP(t *testing.T, d *tlsconf.Dialer, c *Config) error {
	t.Helper()
	p := c.Provider("p")
	up, err := d.Dial(t.Context(), p, p.Endpoints[policy.IMAP], nil)
	if err == nil {
		up.Close()
	}
	return err
}

// TestTLSPolicyFollowsReload: the TLS policy is built when the
// configuration is loaded. After ca_file changes, a configuration loaded
// again (as a reload does) verifies the provider against the new CA, while
// the one loaded before keeps the old CA and refuses; neither reads the
// file when it dials, and one dialer serves both.
func TestTLSPolicyFollowsReload(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newCA(t, "old CA"), newCA(t, "new CA")
	leaf, err := newCA.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	port := serveTLS(t, leaf)
	path := filepath.Join(dir, "mailproxy.toml")
	caFile := filepath.Join(dir, "ca.pem")
	doc := fmt.Sprintf(`[[provider]]
name = "p"
hosts = ["127.0.0.1"]
imap = "imaps://127.0.0.1:%d"
ca_file = "ca.pem"
allow_private_addresses = true
`, port) + listener
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(path, []byte(doc))

	write(caFile, oldCA.PEM())
	before, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	write(caFile, newCA.PEM())
	after, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is read at dial time: without the file both still dial as
	// they were loaded.
	if err := os.Remove(caFile); err != nil {
		t.Fatal(err)
	}

	d := &tlsconf.Dialer{Timeout: 10 * time.Second}
	if err := dialIMAP(t, d, after); err != nil {
		t.Errorf("reloaded configuration (new CA): %v", err)
	}
	if err := dialIMAP(t, d, before); !errors.Is(err, policy.ReasonCertificate) {
		t.Errorf("configuration loaded before the change (old CA): %v, want a certificate refusal", err)
	}
	if err := dialIMAP(t, d, after); err != nil {
		t.Errorf("reloaded configuration, dialled again: %v", err)
	}
}

// TestPinsParsedAtLoad: the pins the dialer enforces are the ones the file
// gave when it was loaded.
func TestPinsParsedAtLoad(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "CA")
	leaf, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := serveTLS(t, leaf)
	load := func(pin string) *Config {
		t.Helper()
		c, err := Parse("test.toml", []byte(fmt.Sprintf(`[[provider]]
name = "p"
hosts = ["127.0.0.1"]
imap = "imaps://127.0.0.1:%d"
ca_file = %q
pins = [%q]
allow_private_addresses = true
`, port, caFile, pin)+listener))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	d := &tlsconf.Dialer{Timeout: 10 * time.Second}
	if err := dialIMAP(t, d, load(tlsconf.FormatPin(tlsconf.SPKIHash(leaf.Leaf)))); err != nil {
		t.Errorf("the server's own pin: %v", err)
	}
	if err := dialIMAP(t, d, load(tlsconf.FormatPin(tlsconf.SPKIHash(other.Leaf)))); !errors.Is(err, policy.ReasonPin) {
		t.Errorf("another key's pin: %v, want a pin refusal", err)
	}
}
