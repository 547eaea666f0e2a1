package imap_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy/imap"
	"mailproxy/proxy/proxytest"
)

const (
	user     = "alice"
	password = "Pa55-w0rd \"quoted\" \\ secret"
)

// memProvider is go-imap's in-memory server behind real TLS: implicit TLS
// (imaps) or STARTTLS (imap).
type memProvider struct {
	endpoint string
	user     *imapmemserver.User
	traffic  *testkit.Buffer // everything the provider received and sent
}

type literal struct {
	*strings.Reader
}

func (l literal) Size() int64 { return int64(l.Len()) }

func startMemProvider(t testing.TB, pki *testkit.PKI, scheme string, messages ...string) *memProvider {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(user, password)
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range messages {
		if _, err := u.Append("INBOX", literal{strings.NewReader(m)}, &goimap.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mem.AddUser(u)
	traffic := &testkit.Buffer{}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:        goimap.CapSet{goimap.CapIMAP4rev1: {}, goimap.CapIMAP4rev2: {}, goimap.CapLiteralPlus: {}, goimap.CapMove: {}},
		Logger:      discardLogger{},
		DebugWriter: traffic,
	}
	var ln net.Listener
	var err error
	switch scheme {
	case "imaps":
		ln, err = tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	case "imap":
		opts.TLSConfig = pki.ServerConfig()
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := imapserver.New(opts)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &memProvider{endpoint: scheme + "://" + ln.Addr().String(), user: u, traffic: traffic}
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// scripted runs a hand-played IMAP provider over implicit TLS (see
// testkit.Scripted).
func scripted(t testing.TB, pki *testkit.PKI, handle func(c *testkit.Conn)) string {
	t.Helper()
	return "imaps://" + testkit.Scripted(t, pki.ServerConfig(), handle)
}

// start runs mailproxy's IMAP front before provider.
func start(t testing.TB, pki *testkit.PKI, endpoint string, opts ...proxytest.ProxyOptions) *proxytest.Proxy {
	t.Helper()
	return proxytest.StartProxy(t, imap.Front{}, policy.IMAP, proxytest.Provider(pki, "example", endpoint), nil, opts...)
}
