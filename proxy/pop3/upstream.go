package pop3

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"strings"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// Bounds on what the provider may send before the relay starts.
const (
	maxUpstreamLines = 1000
	// maxCommand is the longest command line, CRLF included, that RFC
	// 2449 §4 lets a client send; RFC 5034 §4 sends a longer initial
	// response after a "+" challenge instead.
	maxCommand = 255
)

// upstream is the provider's side of a session until the login succeeds.
type upstream struct {
	conn  *tlsconf.Upstream
	br    *bufio.Reader
	route policy.Route
	// caps maps each capability the provider listed (upper case) to its
	// arguments (upper case); nil when it has no CAPA (a plain RFC 1939
	// server).
	caps map[string][]string
	// budget counts the bytes read before the relay (the sum of the
	// greeting, CAPA and the login's replies, as for IMAP).
	budget proxy.ProviderBudget
}

// errLogin is a login mailproxy cannot forward to this provider; code is
// the response code the app gets.
type errLogin struct{ code, msg string }

func (e *errLogin) Error() string { return e.msg }

// start reads the greeting (implicit TLS) and the capabilities of a fresh
// connection to the provider, over TLS. tlsconf has already thrown away
// everything said before STLS; CAPA is asked again here, as RFC 2595 §4
// requires.
func start(conn *tlsconf.Upstream, route policy.Route) (*upstream, error) {
	u := &upstream{conn: conn, br: bufio.NewReaderSize(conn, 4096), route: route}
	if err := u.greeting(); err != nil {
		return nil, err
	}
	if err := u.capa(); err != nil {
		return nil, err
	}
	return u, nil
}

// greeting reads the greeting of an implicit-TLS connection. After STLS
// there is none (RFC 2595 §4).
func (u *upstream) greeting() error {
	if u.conn.AfterSTARTTLS {
		return nil
	}
	greet, err := u.line()
	if err != nil {
		return err
	}
	switch {
	case isOK(greet):
		return nil
	case isERR(greet):
		return &proxy.ProviderError{Msg: "the provider refused the connection: " + clip200(greet)}
	}
	return &proxy.ProviderError{Msg: "the provider's greeting is not POP3: " + clip200(greet)}
}

func (u *upstream) send(line string) error { return proxy.SendLine(u.conn, line) }

// line reads one line of the provider.
func (u *upstream) line() (string, error) { return u.budget.Line(u.br) }

// isOK and isERR tell the status indicators apart (RFC 1939 §3); a "+ "
// continuation (RFC 5034 §4) is neither.
func isOK(l string) bool  { return l == "+OK" || strings.HasPrefix(l, "+OK ") }
func isERR(l string) bool { return l == "-ERR" || strings.HasPrefix(l, "-ERR ") }

// capa asks for the capabilities (RFC 2449 §5). A provider without CAPA
// answers -ERR and is taken to offer USER and PASS only.
func (u *upstream) capa() error {
	if err := u.send("CAPA"); err != nil {
		return err
	}
	return u.readCapa()
}

// maxCapa bounds the bytes of one CAPA reply (real ones are well under
// 1 KiB).
const maxCapa = 64 << 10

// readCapa reads the answer to CAPA.
func (u *upstream) readCapa() error {
	l, err := u.line()
	if err != nil {
		return err
	}
	if !isOK(l) {
		u.caps = nil
		return nil
	}
	u.caps = map[string][]string{}
	kept := 0
	for range maxUpstreamLines {
		l, err := u.line()
		if err != nil {
			return err
		}
		if l == "." {
			return nil
		}
		// What the capabilities keep is bounded in sum, not only per line.
		if kept += len(l); kept > maxCapa {
			return &proxy.ProviderError{Msg: fmt.Sprintf("the provider's CAPA reply is over %d bytes", maxCapa)}
		}
		// Dot-stuffing of a multi-line response (RFC 1939 §3).
		l = strings.TrimPrefix(l, ".")
		if f := strings.Fields(strings.ToUpper(l)); len(f) > 0 {
			u.caps[f[0]] = f[1:]
		}
	}
	return &proxy.ProviderError{Msg: "no end to the provider's CAPA reply"}
}

// has reports a capability the provider listed.
func (u *upstream) has(name string) bool {
	_, ok := u.caps[name]
	return ok
}

// hasSASL reports a SASL mechanism the provider listed (RFC 2449 §6.3).
func (u *upstream) hasSASL(mech string) bool {
	for _, m := range u.caps["SASL"] {
		if m == mech {
			return true
		}
	}
	return false
}

// loginResult is the provider's answer to a login.
type loginResult struct {
	ok bool
	// line is the provider's status line, forwarded to the app as it is.
	line string
}

// login logs in with the app's credentials: AUTH PLAIN (RFC 5034, RFC
// 4616) when the provider lists SASL PLAIN, else USER and PASS (RFC 1939
// §7).
func (u *upstream) login(c proxy.Credentials) (*loginResult, error) {
	if c.Token != (proxy.Secret{}) {
		return u.loginOAuth(c)
	}
	user, pass := u.route.User, c.Password.Reveal()
	switch {
	case u.hasSASL("PLAIN"):
		ir := base64.StdEncoding.EncodeToString([]byte(c.Authzid + "\x00" + user + "\x00" + pass))
		if len("AUTH PLAIN "+ir+"\r\n") <= maxCommand {
			if err := u.send("AUTH PLAIN " + ir); err != nil {
				return nil, err
			}
			return u.result("*")
		}
		if err := u.send("AUTH PLAIN"); err != nil {
			return nil, err
		}
		l, err := u.line()
		if err != nil {
			return nil, err
		}
		if !isContinuation(l) {
			return u.status(l)
		}
		if err := u.send(ir); err != nil {
			return nil, err
		}
		return u.result("*")
	case u.caps == nil || u.has("USER"):
		if strings.ContainsAny(user+pass, "\r\n\x00") {
			return nil, &errLogin{"AUTH", "the user name or password holds characters that USER and PASS cannot carry, and the provider has no SASL PLAIN"}
		}
		if c.Authzid != "" && c.Authzid != c.Username {
			return nil, &errLogin{"AUTH", "the provider has no SASL PLAIN, so mailproxy cannot pass on an authorization identity"}
		}
		if err := u.send("USER " + user); err != nil {
			return nil, err
		}
		l, err := u.line()
		if err != nil {
			return nil, err
		}
		if !isOK(l) {
			return u.status(l)
		}
		if err := u.send("PASS " + pass); err != nil {
			return nil, err
		}
		return u.result("*")
	}
	return nil, &errLogin{"SYS/PERM", "the provider offers neither SASL PLAIN nor USER and PASS, which is what mailproxy can relay"}
}

// loginOAuth logs in with an access token: AUTH OAUTHBEARER (RFC 7628)
// when the provider lists it, else XOAUTH2. Never a password. The initial
// response is sent after the "+" (RFC 5034 §4): with a token it is longer
// than a POP3 command line may be.
func (u *upstream) loginOAuth(c proxy.Credentials) (*loginResult, error) {
	mech := proxy.OAuthMech(u.hasSASL)
	if mech == "" {
		return nil, &errLogin{"SYS/PERM", "the provider lists neither SASL OAUTHBEARER nor XOAUTH2, which its OAuth2 configuration needs"}
	}
	if err := u.send("AUTH " + mech); err != nil {
		return nil, err
	}
	l, err := u.line()
	if err != nil {
		return nil, err
	}
	if !isContinuation(l) {
		return u.status(l)
	}
	if err := u.send(base64.StdEncoding.EncodeToString(proxy.OAuthInitialResponse(mech, u.route.User, c.Token))); err != nil {
		return nil, err
	}
	// A refusal is a challenge with the error (JSON), answered so that
	// the provider ends the exchange with its -ERR.
	return u.result(base64.StdEncoding.EncodeToString(proxy.OAuthFailureAnswer(mech)))
}

func isContinuation(l string) bool { return l == "+" || strings.HasPrefix(l, "+ ") }

// result reads the status line that ends a login. The first "+"
// challenge is answered with answer (an OAuth2 error's answer); a "+"
// challenge asks for more than PLAIN has, so it is cancelled with "*"
// (RFC 5034 §4).
func (u *upstream) result(answer string) (*loginResult, error) {
	for range maxUpstreamLines {
		l, err := u.line()
		if err != nil {
			return nil, err
		}
		if isContinuation(l) {
			if err := u.send(answer); err != nil {
				return nil, err
			}
			answer = "*"
			continue
		}
		return u.status(l)
	}
	return nil, &proxy.ProviderError{Msg: "no end to the provider's login reply"}
}

// status turns a status line into a result.
func (u *upstream) status(l string) (*loginResult, error) {
	switch {
	case isOK(l):
		return &loginResult{ok: true, line: l}, nil
	case isERR(l):
		return &loginResult{ok: false, line: l}, nil
	}
	return nil, &proxy.ProviderError{Msg: "the provider's login reply is not POP3: " + clip200(l)}
}
