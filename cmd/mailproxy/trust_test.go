package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/tlsconf"
)

// swapServer is a TLS provider on 127.0.0.1 that presents a certificate
// from root A until swap() is called, then one from root B; both roots are
// in caFile, so both chains verify.
type swapServer struct {
	addr, caFile string
	a, b         *certs.CA
	useB         atomic.Bool
}

func newSwapServer(t *testing.T) *swapServer {
	t.Helper()
	s := &swapServer{}
	var err error
	if s.a, err = certs.NewCA("Provider Root A"); err != nil {
		t.Fatal(err)
	}
	if s.b, err = certs.NewCA("Interceptor Root B"); err != nil {
		t.Fatal(err)
	}
	leafA, err := s.a.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	leafB, err := s.b.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	s.caFile = filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(s.caFile, append(s.a.PEM(), s.b.PEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	s.addr = tlsServer(t, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if s.useB.Load() {
			return &leafB, nil
		}
		return &leafA, nil
	}})
	return s
}

func (s *swapServer) config(t *testing.T, listen string) string {
	return writeFile(t, "trust.toml", fmt.Sprintf(`[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = %q
provider = "local"
`, s.addr, s.caFile, listen))
}

// The whole round: check learns the anchor, a swapped root is refused by
// check and by run (the app told what changed and what to do, the audit log
// given reason pin with both hashes), `trust accept` shows the chain and
// asks, -yes replaces, service is restored, `trust forget` forgets.
func TestTrustRound(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	s := newSwapServer(t)
	listen := freeAddr(t)
	conf := s.config(t, listen)
	pinA, pinB := tlsconf.FormatPin(tlsconf.SPKIHash(s.a.Cert)), tlsconf.FormatPin(tlsconf.SPKIHash(s.b.Cert))

	if code, out, errOut := run("check", "-config", conf); code != 0 || !strings.Contains(out, "anchor       "+pinA) || !strings.Contains(out, "tofu         learned") {
		t.Fatalf("first check: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ := run("trust")
	if code != 0 || !strings.Contains(out, "127.0.0.1") || !strings.Contains(out, pinA) || !strings.Contains(out, "CN=Provider Root A") ||
		!strings.Contains(out, time.Now().UTC().Format("2006-01-02")) {
		t.Fatalf("trust: exit %d\n%s", code, out)
	}
	store := filepath.Join(data, "mailproxy", "trust")
	for path, want := range map[string]os.FileMode{filepath.Dir(store): 0o700, store: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}

	s.useB.Store(true)
	code, out, _ = run("check", "-config", conf, "-json")
	var r checkResult
	json.Unmarshal([]byte(out), &r)
	if code != 1 || r.Reason != "pin" || !strings.Contains(r.Detail, "mailproxy trust accept 127.0.0.1") {
		t.Fatalf("check after the swap: exit %d\n%s", code, out)
	}

	// run refuses the login's connection: the app is told, the audit says.
	p := startProcess(t, "run", "-config", conf)
	p.wait(`"msg":"listener.start"`)
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	reply := loginReply(c)
	c.Close()
	want := `a1 NO [UNAVAILABLE] mailproxy refused the provider (reason: pin): the certificate authority for 127.0.0.1 changed from "Provider Root A" to "Interceptor Root B"; if you expected this, run ` + "`mailproxy trust accept 127.0.0.1`"
	if !strings.HasPrefix(reply, want) {
		t.Errorf("login reply\n%q\nwant prefix\n%q", reply, want)
	}
	denied := p.wait(`"msg":"policy.denied"`)
	for _, w := range []string{`"reason":"pin"`, pinA, pinB, "CN=Provider Root A", "CN=Interceptor Root B"} {
		if !strings.Contains(denied, w) {
			t.Errorf("policy.denied lacks %s: %s", w, denied)
		}
	}

	// accept asks; "no" changes nothing.
	stdin = strings.NewReader("n\n")
	defer func() { stdin = os.Stdin }()
	code, out, _ = run("trust", "accept", "-config", conf, "127.0.0.1")
	for _, w := range []string{"presents this chain", "anchor       CN=Interceptor Root B", "remembered anchor: " + pinA, "new anchor:        " + pinB, "[y/N]", "nothing changed"} {
		if !strings.Contains(out, w) {
			t.Errorf("trust accept output lacks %q:\n%s", w, out)
		}
	}
	if code != 1 {
		t.Errorf("declined accept: exit %d", code)
	}
	if _, out, _ = run("trust"); !strings.Contains(out, pinA) {
		t.Fatalf("a declined accept changed the store:\n%s", out)
	}
	code, out, errOut := run("trust", "accept", "127.0.0.1", "-config", conf, "-yes")
	if code != 0 || !strings.Contains(out, "remembered "+pinB) {
		t.Fatalf("trust accept -yes: exit %d\n%s%s", code, out, errOut)
	}

	// The running mailproxy sees the change at its next connection.
	c, err = net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	reply = loginReply(c)
	c.Close()
	if strings.Contains(reply, "reason: pin") {
		t.Errorf("after trust accept, login reply %q", reply)
	}
	if tl := p.wait(`"msg":"upstream.tls"`); !strings.Contains(tl, `"tofu":"match"`) || !strings.Contains(tl, `"anchor_sha256":"`+pinB+`"`) {
		t.Errorf("upstream.tls after accept: %s", tl)
	}

	if code, out, _ := run("trust", "forget", "127.0.0.1"); code != 0 || !strings.Contains(out, "forgot") {
		t.Errorf("trust forget: exit %d %s", code, out)
	}
	if code, out, _ := run("trust"); code != 0 || !strings.Contains(out, "no anchors remembered") {
		t.Errorf("trust after forget: exit %d %s", code, out)
	}
	if code, _, _ := run("trust", "forget", "127.0.0.1"); code != 1 {
		t.Errorf("forgetting an unknown host: exit %d", code)
	}
}

// tofu = false: check neither learns nor refuses.
func TestTrustTOFUFalse(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	s := newSwapServer(t)
	conf := s.config(t, freeAddr(t))
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, []byte(strings.Replace(string(b), "allow_private_addresses = true", "allow_private_addresses = true\ntofu = false", 1)), 0o644)
	for range 2 {
		if code, out, errOut := run("check", "-config", conf); code != 0 || !strings.Contains(out, "tofu         off") {
			t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
		}
		s.useB.Store(true)
	}
	if _, out, _ := run("trust"); !strings.Contains(out, "no anchors remembered") {
		t.Errorf("tofu = false learned an anchor:\n%s", out)
	}
}

// TestTrustAcceptOtherHosts: `trust accept` takes every host mailproxy may
// connect to and so may refuse for a changed anchor: an OAuth2 token
// host, and a host on the allowlist that a login may name; a host of no
// provider is refused.
func TestTrustAcceptOtherHosts(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	ca, err := certs.NewCA("Provider Root A")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1", "localhost", "::1"}})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(caFile, ca.PEM(), 0o644)
	addr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{leaf}})
	_, port, _ := net.SplitHostPort(addr)
	pin := tlsconf.FormatPin(tlsconf.SPKIHash(ca.Cert))
	for _, c := range []struct{ name, hosts, extra, host, dialled string }{
		{"token host", `["127.0.0.1", "localhost"]`, fmt.Sprintf(`
[provider.oauth2]
client_id = "mailproxy-test"
auth_url = "https://localhost:%s/authorize"
token_url = "https://localhost:%s/token"
scopes = ["mail"]
`, port, port), "localhost", "https://localhost:" + port},
		{"allowlisted host", `["127.0.0.1", "localhost"]`, "", "localhost", "imaps://localhost:" + port},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("XDG_DATA_HOME", t.TempDir())
			conf := writeFile(t, "other.toml", fmt.Sprintf(`[[provider]]
name = "local"
hosts = %s
imap = "imaps://127.0.0.1:%s"
ca_file = %q
allow_private_addresses = true
%s
[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, c.hosts, port, caFile, c.extra))
			code, out, errOut := run("trust", "accept", "-config", conf, "-yes", c.host)
			if code != 0 || !strings.Contains(out, c.dialled+" presents this chain") || !strings.Contains(out, "remembered "+pin+" for "+c.host) {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
		})
	}
	conf := writeFile(t, "none.toml", fmt.Sprintf(`[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://127.0.0.1:%s"
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, port, caFile))
	if code, _, errOut := run("trust", "accept", "-config", conf, "-yes", "localhost"); code != 2 || !strings.Contains(errOut, "no configured provider connects to localhost") {
		t.Fatalf("a host of no provider: exit %d %s", code, errOut)
	}
}
