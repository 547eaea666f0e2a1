package smtp

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// upstream is the session's connection to the provider, driven by go-smtp's
// client.
type upstream struct {
	conn  *tlsconf.Upstream
	c     *gosmtp.Client
	route policy.Route
	ext   extensions
	// txn is true while a mail transaction is open at the provider (MAIL
	// accepted, no final reply to the message yet), so RSET is due.
	txn bool
	// lost says why the connection can no longer be used; empty while it
	// can.
	lost string
}

// extensions are the EHLO keywords of the provider that matter here, as it
// announced them over TLS.
type extensions struct {
	size      int64           // RFC 1870 SIZE; 0 when absent or unlimited
	eightBit  bool            // RFC 6152 8BITMIME
	smtputf8  bool            // RFC 6531 SMTPUTF8
	dsn       bool            // RFC 3461 DSN
	plain     bool            // RFC 4954 AUTH PLAIN (RFC 4616)
	loginMech bool            // AUTH LOGIN
	oauth     map[string]bool // AUTH OAUTHBEARER (RFC 7628), XOAUTH2: offered
}

// syntheticGreeting stands in for a greeting that never comes.
//
// After STARTTLS, RFC 3207 §4.2 has the client discard what it learnt and
// send EHLO again; the server sends no new 220 greeting. tlsconf has already
// read (and thrown away) the plaintext greeting and EHLO reply and done the
// STARTTLS exchange itself, so that it could refuse injected bytes — but
// go-smtp's Client always reads a 220 greeting before its first command,
// and its own STARTTLS would bypass the policy. So the client is given this
// line ahead of the TLS connection's bytes. It comes from mailproxy, never
// from the network, so it cannot carry anything the provider sent before
// TLS.
const syntheticGreeting = "220 mailproxy (no greeting follows STARTTLS, RFC 3207 section 4.2)\r\n"

// greetedConn is a connection with syntheticGreeting to read first.
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (g *greetedConn) Read(b []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(b, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(b)
}

// start introduces mailproxy on a fresh connection to the provider with
// EHLO. The name it gives is neutral (the dialer's, by default
// "localhost"), never the app's: an app's EHLO name often carries the
// computer's name (RFC 5321 §4.1.1.1 asks for the client's FQDN, which is
// exactly what must not reach the provider).
//
// overlong is called, once, when a reply of the provider runs past
// maxReply (replyConn), to audit that refusal.
func start(conn *tlsconf.Upstream, route policy.Route, name string, timeout time.Duration, overlong func()) (*upstream, error) {
	var nc net.Conn = conn
	if conn.AfterSTARTTLS {
		nc = &greetedConn{Conn: conn, greeting: []byte(syntheticGreeting)}
	}
	c := gosmtp.NewClient(newReplyConn(nc, overlong))
	c.CommandTimeout = timeout
	c.SubmissionTimeout = timeout
	if name == "" {
		name = "localhost"
	}
	if err := c.Hello(name); err != nil {
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			// Under TLS: the provider's own words.
			return nil, &proxy.ProviderError{Msg: fmt.Sprintf("the provider refused the session: %d %s", se.Code, clipText(se.Message))}
		}
		return nil, fmt.Errorf("greeting the provider: %w", err)
	}
	u := &upstream{conn: conn, c: c, route: route}
	if ok, v := c.Extension("SIZE"); ok {
		// "SIZE 0" (or none) means no fixed maximum (RFC 1870 §4).
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n > 0 {
			u.ext.size = n
		}
	}
	u.ext.eightBit, _ = c.Extension("8BITMIME")
	u.ext.smtputf8, _ = c.Extension("SMTPUTF8")
	u.ext.dsn, _ = c.Extension("DSN")
	u.ext.plain = c.SupportsAuth(sasl.Plain)
	u.ext.loginMech = c.SupportsAuth(sasl.Login)
	u.ext.oauth = map[string]bool{
		proxy.MechOAUTHBEARER: c.SupportsAuth(proxy.MechOAUTHBEARER),
		proxy.MechXOAUTH2:     c.SupportsAuth(proxy.MechXOAUTH2),
	}
	return u, nil
}

// errNoOAuthMechanism is an OAuth2 provider that offers neither AUTH
// OAUTHBEARER nor XOAUTH2.
var errNoOAuthMechanism = &proxy.ProviderError{Msg: "the provider offers neither AUTH OAUTHBEARER nor AUTH XOAUTH2, which its OAuth2 configuration needs"}

// oauthClient is the client side of XOAUTH2 or OAUTHBEARER for go-smtp.
// A refusal comes as a 334 challenge holding a JSON error; it is answered
// as the mechanism says, so that the provider's 535 (or 454) reply ends
// the exchange and reaches the app.
type oauthClient struct {
	mech  string
	user  string
	token proxy.Secret
	sent  bool
}

func (c *oauthClient) Start() (string, []byte, error) {
	return c.mech, proxy.OAuthInitialResponse(c.mech, c.user, c.token), nil
}

func (c *oauthClient) Next(challenge []byte) ([]byte, error) {
	if c.sent {
		return nil, errors.New("the provider asked for more than " + c.mech + " has")
	}
	c.sent = true
	return proxy.OAuthFailureAnswer(c.mech), nil
}

// errNoMechanism is a provider that offers neither AUTH PLAIN nor LOGIN.
var errNoMechanism = &proxy.ProviderError{Msg: "the provider offers neither AUTH PLAIN nor AUTH LOGIN, the mechanisms that can relay a password"}

// auth logs in at the provider with the app's credentials: PLAIN when it
// is offered (RFC 4616, the authorization identity passed on as the app
// gave it), else LOGIN. A refusal is the provider's *gosmtp.SMTPError.
//
// go-smtp's client sends "*" after a refused AUTH, as if cancelling an
// exchange in progress (RFC 4954 §4); the provider answers it with an
// error, which the client reads and drops, so the two stay in step.
func (u *upstream) auth(user string, creds proxy.Credentials) error {
	if creds.Token != (proxy.Secret{}) {
		// An access token, never a password: OAUTHBEARER (RFC 7628)
		// when offered, else XOAUTH2.
		mech := proxy.OAuthMech(func(m string) bool { return u.ext.oauth[m] })
		if mech == "" {
			return errNoOAuthMechanism
		}
		return u.c.Auth(&oauthClient{mech: mech, user: user, token: creds.Token})
	}
	switch {
	case u.ext.plain:
		return u.c.Auth(sasl.NewPlainClient(creds.Authzid, user, creds.Password.Reveal()))
	case u.ext.loginMech:
		return u.c.Auth(sasl.NewLoginClient(user, creds.Password.Reveal()))
	}
	return errNoMechanism
}

// kill closes the connection for good, saying why.
func (u *upstream) kill(why string) {
	if u.lost == "" {
		u.lost = why
	}
	u.conn.Close()
}

// quitTimeout bounds the QUIT at the end of a session.
const quitTimeout = 5 * time.Second

// quit says goodbye to the provider (RFC 5321 §4.1.1.10) and closes.
func (u *upstream) quit() {
	if u.lost == "" {
		u.c.CommandTimeout = min(u.c.CommandTimeout, quitTimeout)
		u.c.Quit()
		u.lost = "the session ended"
	}
	u.conn.Close()
}

// isReply returns the provider's reply inside err, if err is one.
func isReply(err error) (*gosmtp.SMTPError, bool) {
	var se *gosmtp.SMTPError
	ok := errors.As(err, &se)
	return se, ok
}

// parseReply splits a reply text as go-smtp's client returns it into its
// enhanced status code (RFC 3463), when it has one, and the text without it
// (the code repeated on further lines is dropped too, RFC 2034 §4).
func parseReply(msg string) (gosmtp.EnhancedCode, string) {
	first, rest, ok := strings.Cut(msg, " ")
	if !ok {
		return gosmtp.EnhancedCodeNotSet, msg
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return gosmtp.EnhancedCodeNotSet, msg
	}
	var ec gosmtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return gosmtp.EnhancedCodeNotSet, msg
		}
		ec[i] = n
	}
	return ec, strings.ReplaceAll(rest, "\n"+first+" ", "\n")
}
