package smtp_test

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
	"mailproxy/proxy/smtp"
)

const (
	user     = "alice@example.test"
	password = "Pa55-w0rd ünï \"secret\""
	// providerSize is the SIZE the test provider announces.
	providerSize = 40 << 20
)

// provider is go-smtp's server behind real TLS, as implicit TLS (smtps) or
// STARTTLS (smtp, where it refuses AUTH before TLS), recording what it
// received.
type provider struct {
	endpoint string
	conns    atomic.Int64 // TCP connections accepted

	mu       sync.Mutex
	user     string
	pass     string
	mechs    []string                     // AUTH mechanisms offered; PLAIN by default
	reject   map[string]*gosmtp.SMTPError // RCPT refusals by recipient
	dataErr  *gosmtp.SMTPError            // the reply to every message, instead of 250
	dropAt   int64                        // close the connection after this many message bytes
	count    bool                         // count message bytes, do not keep them
	ehlo     []string                     // every EHLO name it was given
	auths    []authSeen
	messages []received
	// valid checks an access token (XOAUTH2, OAUTHBEARER), when set.
	valid func(token string) (string, bool)
}

type authSeen struct {
	mech  string
	tls   bool
	ok    bool
	authz string
}

type received struct {
	from string
	opts gosmtp.MailOptions
	to   []string
	data []byte
	size int64
}

func startProvider(t testing.TB, pki *testkit.PKI, scheme string) *provider {
	t.Helper()
	p := &provider{user: user, pass: password, mechs: []string{sasl.Plain}}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		p.mu.Lock()
		p.ehlo = append(p.ehlo, c.Hostname())
		p.mu.Unlock()
		return &providerSession{p: p, c: c}, nil
	}))
	srv.Domain = "provider.test"
	srv.MaxMessageBytes = providerSize
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = quietLog{}
	var ln net.Listener
	var err error
	switch scheme {
	case "smtps":
		ln, err = tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	case "smtp":
		srv.TLSConfig = pki.ServerConfig() // AllowInsecureAuth stays false
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	default:
		t.Fatalf("scheme %q", scheme)
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(countingListener{ln, &p.conns})
	t.Cleanup(func() { srv.Close() })
	p.endpoint = scheme + "://" + ln.Addr().String()
	return p
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

func (p *provider) set(f func(p *provider)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *provider) received() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]received(nil), p.messages...)
}

func (p *provider) ehloNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ehlo...)
}

func (p *provider) authsSeen() []authSeen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]authSeen(nil), p.auths...)
}

// providerSession is one provider-side session. Its recipient list is
// cleared by Reset only, so that an RSET the relay failed to pass on would
// show up as recipients of the next message.
type providerSession struct {
	p      *provider
	c      *gosmtp.Conn
	authed bool
	from   string
	opts   gosmtp.MailOptions
	to     []string
}

func (s *providerSession) AuthMechanisms() []string {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.mechs
}

func (s *providerSession) Auth(mech string) (sasl.Server, error) {
	check := func(authz, u, pw string) error {
		_, isTLS := s.c.TLSConnectionState()
		s.p.mu.Lock()
		ok := u == s.p.user && pw == s.p.pass
		s.p.auths = append(s.p.auths, authSeen{mech: mech, tls: isTLS, ok: ok, authz: authz})
		s.p.mu.Unlock()
		if !ok {
			return gosmtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(check), nil
	case sasl.Login:
		return smtp.NewLoginServer(func(u, pw string) error { return check("", u, pw) }), nil
	case proxy.MechXOAUTH2, proxy.MechOAUTHBEARER:
		return proxytest.OAuthServer(mech, func(u, token string) error {
			s.p.mu.Lock()
			who, ok := s.p.valid(token)
			ok = ok && who == u
			s.p.auths = append(s.p.auths, authSeen{mech: mech, tls: true, ok: ok})
			s.p.mu.Unlock()
			if !ok {
				return gosmtp.ErrAuthFailed
			}
			s.authed = true
			return nil
		}, gosmtp.ErrAuthFailed), nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

func (s *providerSession) Mail(from string, opts *gosmtp.MailOptions) error {
	if !s.authed {
		return gosmtp.ErrAuthRequired
	}
	s.from, s.opts = from, *opts
	return nil
}

func (s *providerSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.p.mu.Lock()
	rej := s.p.reject[to]
	s.p.mu.Unlock()
	if rej != nil {
		return rej
	}
	s.to = append(s.to, to)
	return nil
}

func (s *providerSession) Data(r io.Reader) error {
	s.p.mu.Lock()
	dropAt, count, dataErr := s.p.dropAt, s.p.count, s.p.dataErr
	s.p.mu.Unlock()
	if dropAt > 0 {
		io.CopyN(io.Discard, r, dropAt)
		s.c.Conn().Close() // the provider vanishes mid-message
		return errors.New("dropped")
	}
	m := received{from: s.from, opts: s.opts, to: append([]string(nil), s.to...)}
	var err error
	if count {
		m.size, err = io.Copy(io.Discard, r)
	} else {
		m.data, err = io.ReadAll(r)
		m.size = int64(len(m.data))
	}
	if err != nil {
		return err
	}
	if dataErr != nil {
		return dataErr
	}
	s.p.mu.Lock()
	s.p.messages = append(s.p.messages, m)
	s.p.mu.Unlock()
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as Q1234"}
}

func (s *providerSession) Reset() { s.to = nil }

func (s *providerSession) Logout() error { return nil }

// start runs mailproxy's SMTP front before a provider at endpoint.
func start(t testing.TB, pki *testkit.PKI, endpoint string, opts ...proxytest.ProxyOptions) *proxytest.Proxy {
	t.Helper()
	return proxytest.StartProxy(t, smtp.Front{}, policy.SMTP, proxytest.Provider(pki, "example", endpoint), nil, opts...)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// greet reads the greeting and sends EHLO, returning the reply lines.
func greet(c *testkit.Conn, name string) []string {
	c.Expect("220 *")
	c.Send("EHLO %s", name)
	return c.ExpectUntil("250 *")
}

// login greets and logs in with AUTH PLAIN.
func login(c *testkit.Conn) {
	greet(c, "alices-laptop.office.example")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("235 *")
}

// dotStuff encodes a message for DATA (RFC 5321 §4.5.2).
func dotStuff(msg string) string {
	lines := strings.SplitAfter(msg, "\r\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") {
			lines[i] = "." + l
		}
	}
	return strings.Join(lines, "") + ".\r\n"
}

// message has 8-bit and UTF-8 content and lines that need dot-stuffing,
// including one that is a lone dot.
const message = "From: Jörg <jörg@example.test>\r\n" +
	"To: bob@example.test, zoë@example.test\r\n" +
	"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Grüße aus Köln ☃ — 日本語\r\n" +
	".a line that starts with a dot\r\n" +
	"..two dots\r\n" +
	".\r\n" +
	"raw 8-bit octets: \xe9\xff\x80\r\n" +
	"bye\r\n"

// saslPlain is the app's AUTH PLAIN, for go-smtp's client.
func saslPlain() sasl.Client { return sasl.NewPlainClient("", user, password) }

// quit ends a session as an app does: QUIT, the 221, then closing.
func quit(c *testkit.Conn) {
	c.Send("QUIT")
	c.Expect("221 *")
	c.ExpectClosed(5 * time.Second)
}

// keywords returns the EHLO keywords (with parameters) of an EHLO reply,
// without the greeting line.
func keywords(ehlo []string) []string {
	var out []string
	for _, l := range ehlo[1:] {
		out = append(out, l[4:])
	}
	return out
}
