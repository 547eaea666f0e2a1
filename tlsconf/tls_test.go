package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
)

func serverConfig(cert tls.Certificate, min, max uint16, suites ...uint16) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: min, MaxVersion: max, CipherSuites: suites}
}

func TestDefaultsAcceptModernServer(t *testing.T) {
	p := newPKI(t)
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS12, tls.VersionTLS13))
	r := dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port)
	r.wantOK(t)
	if r.tls["tls_version"] != "TLS1.3" || r.tls["verified"] != true || r.tls["pin"] != "none" || r.tls["spki_sha256"] == "" {
		t.Errorf("upstream.tls = %v", r.tls)
	}
	if g := r.tls["group"]; g != "X25519MLKEM768" && g != "X25519" {
		t.Errorf("group = %v, want an ECDHE or hybrid group", g)
	}
	if n := len(r.audit.Find(t, policy.EventUpstreamConnect)); n != 1 {
		t.Errorf("%d upstream.connect events, want 1", n)
	}
	// The connection works: the server's first bytes arrive.
	buf := make([]byte, 5)
	if _, err := io.ReadFull(r.up, buf); err != nil || string(buf) != "hello" {
		t.Errorf("read %q, %v", buf, err)
	}
}

func TestTLS12ECDHEAccepted(t *testing.T) {
	p := newPKI(t)
	for _, suite := range AEADSuites {
		cert := p.ecdsa
		if strings.Contains(tls.CipherSuiteName(suite), "_RSA_") {
			cert = p.rsa
		}
		port := serveTLS(t, serverConfig(cert, tls.VersionTLS12, tls.VersionTLS12, suite))
		r := dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port)
		r.wantOK(t)
		if r.tls["cipher"] != tls.CipherSuiteName(suite) || r.tls["tls_version"] != "TLS1.2" {
			t.Errorf("suite %s: upstream.tls = %v", tls.CipherSuiteName(suite), r.tls)
		}
	}
}

func TestVersionWindow(t *testing.T) {
	p := newPKI(t)
	legacy := func(pr *policy.Provider) { pr.TLS.MinVersion = tls.VersionTLS10 }
	classic := func(pr *policy.Provider) { pr.TLS.MaxVersion = tls.VersionTLS12 }
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		// A TLS 1.0 or 1.1 server offering ECDHE CBC-SHA: refused by default...
		port := serveTLS(t, serverConfig(p.rsa, v, v, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA))
		dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonTLSVersion)
		// ...and by the classic window, which starts at 1.2 too...
		dialTest(t, p.provider(classic), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonTLSVersion)
		// ...accepted, with a warning, for a provider named legacy.
		r := dialTest(t, p.provider(legacy), policy.IMAP, policy.ImplicitTLS, port)
		r.wantOK(t)
		if r.tls["tls_version"] != policy.TLSVersionName(v) || r.tls["level"] != "WARN" || r.tls["warning"] == nil {
			t.Errorf("legacy upstream.tls = %v", r.tls)
		}
	}
	// A TLS 1.3-only server is refused by max_tls = "1.2".
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS13, tls.VersionTLS13))
	dialTest(t, p.provider(classic), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonTLSVersion)
	dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port).wantOK(t)
}

func TestLegacyWindowStillECDHEOnly(t *testing.T) {
	p := newPKI(t)
	legacy := func(pr *policy.Provider) { pr.TLS.MinVersion = tls.VersionTLS10 }
	// RSA key exchange at TLS 1.0 is refused even for a legacy provider.
	port := serveTLS(t, serverConfig(p.rsa, tls.VersionTLS10, tls.VersionTLS10, tls.TLS_RSA_WITH_AES_128_CBC_SHA))
	dialTest(t, p.provider(legacy), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonCipher)
	pr := &Profile{MinVersion: tls.VersionTLS10}
	if got := len(pr.Suites()); got != 10 {
		t.Errorf("legacy profile has %d suites, want 10", got)
	}
	if got := len((&Profile{}).Suites()); got != 6 {
		t.Errorf("default profile has %d suites, want 6", got)
	}
}

func TestWeakKeyExchangeRefused(t *testing.T) {
	p := newPKI(t)
	// RSA key exchange, played by Go (an explicit suite list allows it).
	port := serveTLS(t, serverConfig(p.rsa, tls.VersionTLS12, tls.VersionTLS12, tls.TLS_RSA_WITH_AES_128_GCM_SHA256))
	dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonCipher)
	// 3DES and CBC-SHA256 likewise.
	port = serveTLS(t, serverConfig(p.rsa, tls.VersionTLS12, tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA))
	dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonCipher)
	port = serveTLS(t, serverConfig(p.rsa, tls.VersionTLS12, tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256))
	dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonCipher)
}

func TestOpenSSLServers(t *testing.T) {
	p := newPKI(t)
	legacy := func(pr *policy.Provider) { pr.TLS.MinVersion = tls.VersionTLS10 }
	cases := []struct {
		name     string
		provider *policy.Provider
		args     []string
		reason   policy.Reason // "" means accepted
	}{
		{"rsa-kex-only", p.provider(), []string{"-tls1_2", "-cipher", "AES128-GCM-SHA256"}, policy.ReasonCipher},
		{"dhe-only", p.provider(), []string{"-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"}, policy.ReasonCipher},
		{"tls1.0-rsa-kex-legacy", p.provider(legacy), []string{"-tls1", "-cipher", "AES128-SHA:@SECLEVEL=0"}, policy.ReasonCipher},
		{"tls1.0-ecdhe-default", p.provider(), []string{"-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"}, policy.ReasonTLSVersion},
		{"tls1.1-ecdhe-default", p.provider(), []string{"-tls1_1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"}, policy.ReasonTLSVersion},
		{"tls1.0-ecdhe-legacy", p.provider(legacy), []string{"-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"}, ""},
		{"tls1.3-only", p.provider(), []string{"-tls1_3"}, ""},
		{"tls1.3-only-classic-window", p.provider(func(pr *policy.Provider) { pr.TLS.MaxVersion = tls.VersionTLS12 }), []string{"-tls1_3"}, policy.ReasonTLSVersion},
		{"tls1.2-ecdhe-gcm", p.provider(), []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			port := opensslServer(t, p, p.rsa, c.args...)
			r := dialTest(t, c.provider, policy.IMAP, policy.ImplicitTLS, port)
			if c.reason == "" {
				r.wantOK(t)
			} else {
				r.wantDenied(t, c.reason)
			}
		})
	}
}

// TestSSLv3ServerHelloRefused plays a server that answers any ClientHello
// with a ServerHello for SSL 3.0 (Go cannot be made to speak SSLv3).
func TestSSLv3ServerHelloRefused(t *testing.T) {
	p := newPKI(t)
	port := serveRaw(t, func(c net.Conn) {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(hdr[3:5])))
		body := []byte{0x03, 0x00}               // server_version SSL 3.0
		body = append(body, make([]byte, 32)...) // random
		body = append(body, 0)                   // session id length
		body = append(body, 0x00, 0x2f)          // TLS_RSA_WITH_AES_128_CBC_SHA
		body = append(body, 0)                   // no compression
		hs := append([]byte{2, 0, 0, byte(len(body))}, body...)
		rec := append([]byte{0x16, 0x03, 0x00, 0, byte(len(hs))}, hs...)
		c.Write(rec)
		io.Copy(io.Discard, c)
	})
	r := dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port)
	r.wantDenied(t, policy.ReasonTLSVersion)
	if !strings.Contains(r.denied["detail"].(string), "300") {
		t.Errorf("detail %q does not name version 300", r.denied["detail"])
	}
}

func TestCertificateRefusals(t *testing.T) {
	p := newPKI(t)
	otherCA, _ := certs.NewCA("another CA")
	wrongName := p.issue(t, certs.Leaf{Names: []string{"mail.other.test"}})
	expired := p.issue(t, certs.Leaf{Names: []string{"127.0.0.1"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	selfSigned, err := certs.SelfSigned(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	unknownCA, err := otherCA.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]tls.Certificate{"wrong-name": wrongName, "expired": expired, "self-signed": selfSigned, "unknown-ca": unknownCA} {
		t.Run(name, func(t *testing.T) {
			port := serveTLS(t, serverConfig(cert, tls.VersionTLS12, tls.VersionTLS13))
			r := dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port)
			r.wantDenied(t, policy.ReasonCertificate)
		})
	}
	// Without ca_file the system roots apply, and the test CA is not one.
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS12, tls.VersionTLS13))
	dialTest(t, p.provider(func(pr *policy.Provider) { pr.TLS.Roots = nil }), policy.IMAP, policy.ImplicitTLS, port).wantDenied(t, policy.ReasonCertificate)
}

func TestPins(t *testing.T) {
	p := newPKI(t)
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS12, tls.VersionTLS13))
	goodHash, badHash := SPKIHash(p.ecdsa.Leaf), SPKIHash(p.rsa.Leaf)
	good, bad := FormatPin(goodHash), FormatPin(badHash)

	r := dialTest(t, p.provider(func(pr *policy.Provider) { pr.TLS.Pins = [][32]byte{badHash, goodHash} }), policy.IMAP, policy.ImplicitTLS, port)
	r.wantOK(t)
	if r.tls["pin"] != "ok" || "sha256/"+r.tls["spki_sha256"].(string) != good {
		t.Errorf("upstream.tls = %v, want pin ok and spki %s", r.tls, good)
	}
	r = dialTest(t, p.provider(func(pr *policy.Provider) { pr.TLS.Pins = [][32]byte{badHash} }), policy.IMAP, policy.ImplicitTLS, port)
	r.wantDenied(t, policy.ReasonPin)
	if !strings.Contains(r.denied["detail"].(string), good) {
		t.Errorf("pin refusal %q does not show the key's actual pin", r.denied["detail"])
	}
	// Pins checked in VerifyConnection hold on resumption too.
	pr := &Profile{Roots: p.ca.Pool()}
	h, _ := ParsePin(bad)
	pr.Pins = append(pr.Pins, h)
	cfg := pr.ClientConfig("127.0.0.1")
	if cfg.VerifyConnection == nil || cfg.InsecureSkipVerify {
		t.Fatal("client config does not verify")
	}
	if _, err := ParsePin("sha256/short"); err == nil {
		t.Error("ParsePin accepted a short hash")
	}
	if _, err := ParsePin("sha1/" + good[7:]); err == nil {
		t.Error("ParsePin accepted another algorithm")
	}
}

func TestClientConfigInvariants(t *testing.T) {
	for _, pr := range []*Profile{{}, {MinVersion: tls.VersionTLS10}, {MaxVersion: tls.VersionTLS12}, {MinVersion: tls.VersionTLS13}} {
		cfg := pr.ClientConfig("mail.example.com")
		if cfg.ServerName != "mail.example.com" || cfg.InsecureSkipVerify || cfg.MinVersion < tls.VersionTLS10 || len(cfg.CipherSuites) == 0 {
			t.Errorf("profile %+v: config %+v", pr, cfg)
		}
		for _, s := range cfg.CipherSuites {
			name := tls.CipherSuiteName(s)
			if !strings.HasPrefix(name, "TLS_ECDHE_") || strings.Contains(name, "3DES") || strings.Contains(name, "RC4") || strings.HasSuffix(name, "CBC_SHA256") {
				t.Errorf("profile %+v allows %s", pr, name)
			}
		}
	}
}

// TestHandBuiltWindowRechecked: the dialer does not trust a TLS policy it
// did not see loaded. A window the configuration would refuse is refused
// at dial, before any connection is made.
func TestHandBuiltWindowRechecked(t *testing.T) {
	p := newPKI(t)
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS10, tls.VersionTLS13))
	for _, w := range []policy.TLSPolicy{
		{MinVersion: 0x0300}, // SSLv3
		{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, // a ceiling below 1.2
		{MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS12}, // min above max
	} {
		r := dialTest(t, p.provider(func(pr *policy.Provider) { pr.TLS.MinVersion, pr.TLS.MaxVersion = w.MinVersion, w.MaxVersion }),
			policy.IMAP, policy.ImplicitTLS, port)
		if r.err == nil {
			t.Errorf("window %s-%s: dial succeeded", policy.TLSVersionName(w.MinVersion), policy.TLSVersionName(w.MaxVersion))
		}
		if n := len(r.audit.Find(t, policy.EventUpstreamConnect)); n != 0 {
			t.Errorf("window %s-%s: connected before refusing", policy.TLSVersionName(w.MinVersion), policy.TLSVersionName(w.MaxVersion))
		}
	}
}

func TestPrivateAddressesRefused(t *testing.T) {
	p := newPKI(t)
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS12, tls.VersionTLS13))
	strict := p.provider(func(pr *policy.Provider) { pr.AllowPrivateAddresses = false })
	r := dialTest(t, strict, policy.IMAP, policy.ImplicitTLS, port)
	r.wantDenied(t, policy.ReasonPrivateAddress)
	if n := len(r.audit.Find(t, policy.EventUpstreamConnect)); n != 0 {
		t.Errorf("a refused address was connected to")
	}
	// A name is checked after resolution: localhost resolves to loopback.
	strict.Hosts = []string{"localhost"}
	ab := &testkit.Audit{}
	_, err := (&Dialer{}).Dial(t.Context(), strict, policy.Endpoint{Proto: policy.IMAP, Host: "localhost", Port: uint16(port)}, policy.NewAudit(ab, 0).Session("x", policy.IMAP))
	if !errors.Is(err, policy.ReasonPrivateAddress) || len(ab.Find(t, policy.EventDenied)) != 1 {
		t.Errorf("localhost: %v\n%s", err, ab.String())
	}
}

func TestHostOutsideAllowlistRefused(t *testing.T) {
	p := newPKI(t)
	port := serveTLS(t, serverConfig(p.ecdsa, tls.VersionTLS12, tls.VersionTLS13))
	pr := p.provider(func(pr *policy.Provider) { pr.Hosts = []string{"mail.example.com"} })
	r := dialTest(t, pr, policy.IMAP, policy.ImplicitTLS, port)
	r.wantDenied(t, policy.ReasonNonProviderHost)
}

func TestClassifyTimeoutIsNotARefusal(t *testing.T) {
	err := Classify("h", &net.OpError{Op: "read", Err: timeoutErr{}})
	if errors.Is(err, policy.ReasonHandshake) {
		t.Errorf("a timeout was classified as a refusal: %v", err)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestCheckGODEBUG(t *testing.T) {
	for _, ok := range []string{"", "http2client=0", "tlsrsakex=0", "x509sha1=1,x509sha1=0", "tlsmlkem=1"} {
		if err := CheckGODEBUG(ok); err != nil {
			t.Errorf("CheckGODEBUG(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"tlsrsakex=1", "tls3des=1", "tls10server=1", "x509sha1=1", "http2client=0,tlsunsafeekm=1", "x509ignoreCN=0", "tlssha1=1"} {
		err := CheckGODEBUG(bad)
		if err == nil {
			t.Errorf("CheckGODEBUG(%q) accepted a weakening setting", bad)
			continue
		}
		key, _, _ := strings.Cut(bad[strings.LastIndex(bad, ",")+1:], "=")
		if !strings.Contains(err.Error(), key) {
			t.Errorf("CheckGODEBUG(%q) = %v, does not name %s", bad, err, key)
		}
	}
}

func TestLoadRoots(t *testing.T) {
	p := newPKI(t)
	if _, err := LoadRoots(p.caFile); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRoots(p.dir + "/missing.pem"); err == nil {
		t.Error("a missing ca_file loaded")
	}
	var _ *x509.CertPool
}

// TestSilentHangUpDiagnosed: a server that hangs up without an alert when
// it shares no suite (as Dovecot 2.3 does) is diagnosed by a second,
// diagnostic hello, and refused for the right reason.
func TestSilentHangUpDiagnosed(t *testing.T) {
	p := newPKI(t)
	for _, c := range []struct {
		name   string
		suite  uint16
		vers   uint16
		reason policy.Reason
	}{
		{"rsa-kex-only", 0x009c, 0x0303, policy.ReasonCipher},
		{"dhe-only", 0x009e, 0x0303, policy.ReasonCipher},
		{"tls1.0-only", 0xc013, 0x0301, policy.ReasonTLSVersion},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := serveRaw(t, func(conn net.Conn) {
				hdr := make([]byte, 5)
				if _, err := io.ReadFull(conn, hdr); err != nil {
					return
				}
				hello := make([]byte, binary.BigEndian.Uint16(hdr[3:5]))
				io.ReadFull(conn, hello)
				// Go's policed hello offers only allowed suites; the
				// diagnostic one offers them all.
				if !slices.Contains(offeredSuites(hello), c.suite) {
					return // hang up without an alert
				}
				body := binary.BigEndian.AppendUint16(nil, c.vers)
				body = append(body, make([]byte, 32)...)
				body = append(body, 0)
				body = binary.BigEndian.AppendUint16(body, c.suite)
				body = append(body, 0)
				hs := append([]byte{2, 0, 0, byte(len(body))}, body...)
				conn.Write(append([]byte{0x16, 0x03, 0x03, 0, byte(len(hs))}, hs...))
				io.Copy(io.Discard, conn)
			})
			r := dialTest(t, p.provider(), policy.IMAP, policy.ImplicitTLS, port)
			r.wantDenied(t, c.reason)
			if !strings.Contains(r.denied["detail"].(string), "without an alert") {
				t.Errorf("detail %q", r.denied["detail"])
			}
			if n := len(r.audit.Find(t, policy.EventUpstreamConnect)); n != 2 {
				t.Errorf("%d upstream.connect events, want 2: the diagnostic connection is recorded too", n)
			}
		})
	}
}

// offeredSuites parses the cipher suites of a ClientHello handshake message.
func offeredSuites(hello []byte) []uint16 {
	off := 4 + 2 + 32 // type, length, version, random
	if len(hello) < off+1 {
		return nil
	}
	off += 1 + int(hello[off]) // session id
	if len(hello) < off+2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(hello[off:]))
	off += 2
	var out []uint16
	for i := 0; i+1 < n && off+i+1 < len(hello); i += 2 {
		out = append(out, binary.BigEndian.Uint16(hello[off+i:]))
	}
	return out
}
