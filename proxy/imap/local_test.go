package imap_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"mailproxy/internal/testkit"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
	"mailproxy/tlsconf"
)

// localTLS makes the generated local certificate, as `mailproxy cert`
// does, and returns the listener option and a pool holding the exported
// certificate file, which is what an app would be told to trust.
func localTLS(t *testing.T, mode proxy.LocalSecurity) (proxytest.ProxyOptions, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	cert, _, err := tlsconf.LoadOrCreateLocalCert(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, tlsconf.LocalCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("exported certificate is not PEM")
	}
	return func(st *proxy.Settings) {
		st.Listen.LocalSecurity = mode
		st.LocalTLS = tlsconf.LocalServerConfig(cert)
	}, pool
}

func TestLocalTLSAndSTARTTLS(t *testing.T) {
	for _, mode := range []proxy.LocalSecurity{proxy.LocalTLS, proxy.LocalSTARTTLS} {
		t.Run(string(mode), func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startMemProvider(t, pki, "imaps", message)
			opt, pool := localTLS(t, mode)
			p := start(t, pki, prov.endpoint, opt)
			opts := &imapclient.Options{TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
			var c *imapclient.Client
			var err error
			if mode == proxy.LocalTLS {
				c, err = imapclient.DialTLS(p.Addr, opts)
			} else {
				c, err = imapclient.DialStartTLS(p.Addr, opts)
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			if err := c.Login(user, password).Wait(); err != nil {
				t.Fatalf("login: %v", err)
			}
			if sel, err := c.Select("INBOX", nil).Wait(); err != nil || sel.NumMessages != 1 {
				t.Fatalf("select: %v", err)
			}
			if err := c.Logout().Wait(); err != nil {
				t.Fatal(err)
			}
			c.Close()
			checkAudit(t, p, sessionEvents)
		})
	}
}

func TestLocalSTARTTLSRefusesInjection(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	opt, _ := localTLS(t, proxy.LocalSTARTTLS)
	p := start(t, pki, prov.endpoint, opt)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN *")
	// A command sent in plaintext behind STARTTLS must not be taken as
	// sent under TLS.
	c.SendRaw("s STARTTLS\r\nx LOGIN alice secret\r\n")
	c.Expect("s OK *")
	c.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 1)
	if d := p.Audit.Find(t, "policy.denied"); len(d) != 1 || d[0]["reason"] != "starttls" {
		t.Errorf("policy.denied %v", d)
	}
}

// dialFrom connects from a chosen loopback source address.
func dialFrom(t *testing.T, src, addr string) *testkit.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return testkit.Wrap(t, c)
}

// TestLANListener stands 127.0.0.2 in for a LAN address: clients outside
// allow_clients are refused and audited, clients inside are served, and
// plaintext logins need allow_plaintext_auth or local TLS.
func TestLANListener(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	lan := func(plain bool) proxytest.ProxyOptions {
		return func(st *proxy.Settings) {
			st.Listen.Address = "127.0.0.2:0"
			st.Listen.Access.Loopback = false
			st.Listen.Access.AllowClients = []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}
			st.Listen.Access.AllowPlaintextAuth = plain
		}
	}
	p := start(t, pki, prov.endpoint, lan(false))

	out := dialFrom(t, "127.0.0.4", p.Addr)
	out.Expect("* BYE [UNAVAILABLE] *")
	out.ExpectClosed(5 * time.Second)
	in := dialFrom(t, "127.0.0.3", p.Addr)
	in.Expect("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED *")
	in.Send("a1 LOGIN alice secret")
	in.Expect("a1 NO [PRIVACYREQUIRED] *")
	in.Send("a2 LOGOUT")
	in.ExpectUntil("a2 OK *")
	in.C.Close()
	p.Audit.WaitFor(t, "session.end", 1)
	d := p.Audit.Find(t, "policy.denied")
	// The client outside allow_clients, then the login without TLS.
	if len(d) != 2 || d[0]["reason"] != "remote_client" || d[0]["host"] != "127.0.0.4" || d[1]["reason"] != "plaintext_auth" {
		t.Errorf("policy.denied %v", d)
	}
	if n := len(p.Audit.Find(t, "session.start")); n != 1 {
		t.Errorf("%d sessions started, want 1 (the refused client has none)", n)
	}

	// allow_plaintext_auth = true: the office decided plaintext on its LAN
	// is acceptable.
	p = start(t, pki, prov.endpoint, lan(true))
	in = dialFrom(t, "127.0.0.3", p.Addr)
	in.Expect("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN *")
	in.Send(`a1 LOGIN alice "%s"`, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(password))
	in.Expect("a1 OK *")
}
