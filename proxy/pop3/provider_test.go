package pop3_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/proxytest"
)

const (
	user     = "alice"
	password = "Pa55 w0rd \"quoted\" \\ secret"
	// message has a line that starts with "." and one that is only ".":
	// on the wire each gets one more dot (RFC 1939 §3).
	message = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice,\r\n.line starting with a dot\r\n.\r\n..two dots\r\nbye\r\n"
	// messageWire is message as RETR sends it, terminator included.
	messageWire = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice,\r\n..line starting with a dot\r\n..\r\n...two dots\r\nbye\r\n.\r\n"
	second      = "From: carol@example.test\r\nSubject: second\r\n\r\nshort\r\n"
)

// provider is pop3server with alice's maildrop behind real TLS.
type provider struct {
	endpoint string
	backend  *pop3server.MemBackend
	alice    *pop3server.MemUser
	uids     []string
}

// startProvider serves alice's two messages over implicit TLS (scheme
// "pop3s") or STLS ("pop3"), with opts (Backend and TLSConfig are set
// here unless given).
func startProvider(t testing.TB, pki *testkit.PKI, scheme string, opts pop3server.Options) *provider {
	t.Helper()
	b := pop3server.NewMemBackend()
	alice := b.AddUser(user, password)
	uids := []string{alice.Add(message), alice.Add(second)}
	if opts.Backend == nil {
		opts.Backend = b
	}
	var ln net.Listener
	var err error
	switch scheme {
	case "pop3s":
		ln, err = tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	case "pop3":
		if opts.TLSConfig == nil {
			opts.TLSConfig = pki.ServerConfig()
		}
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	default:
		t.Fatalf("scheme %q", scheme)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pop3server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("provider: %v", err)
		}
	})
	return &provider{endpoint: scheme + "://" + ln.Addr().String(), backend: b, alice: alice, uids: uids}
}

// scripted runs a hand-played provider (see testkit.Scripted): implicit TLS
// when tlsOn, else plaintext for STLS scripts.
func scripted(t testing.TB, pki *testkit.PKI, tlsOn bool, handle func(c *testkit.Conn)) string {
	t.Helper()
	var cfg *tls.Config
	if tlsOn {
		cfg = pki.ServerConfig()
	}
	return testkit.Scripted(t, cfg, handle)
}

// start runs mailproxy's POP3 front before the provider at endpoint.
func start(t testing.TB, pki *testkit.PKI, endpoint string, opts ...proxytest.ProxyOptions) *proxytest.Proxy {
	t.Helper()
	return proxytest.StartProxy(t, pop3.Front{}, policy.POP3, proxytest.Provider(pki, "example", endpoint), nil, opts...)
}

// multiline reads the rest of a multi-line response, up to and including
// the terminating ".", byte for byte.
func multiline(t testing.TB, c *testkit.Conn) string {
	t.Helper()
	var b strings.Builder
	c.C.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := c.BR.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a multi-line response: %v (have %d bytes)", err, b.Len())
		}
		b.WriteString(l)
		if l == ".\r\n" {
			return b.String()
		}
	}
}

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
