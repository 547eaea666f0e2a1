package imap

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// Bounds on what the provider may send before the relay starts: the
// greeting, the capabilities and the login reply together, in bytes
// (proxy.MaxBeforeRelay; what mailproxy keeps of them is less), and the
// responses per command.
const (
	maxUpstreamBytes = proxy.MaxBeforeRelay
	maxUpstreamLines = 1000
)

// upstream is the provider's side of a session until the login succeeds.
type upstream struct {
	conn  *tlsconf.Upstream
	br    *bufio.Reader
	route policy.Route
	caps  map[string]bool // upper case
	tagN  int
	// budget counts the bytes read before the relay.
	budget proxy.ProviderBudget
}

// start reads the greeting and the capabilities of a fresh connection to
// the provider, over TLS. Nothing the provider sent before TLS is kept.
func start(conn *tlsconf.Upstream, route policy.Route) (*upstream, error) {
	u := &upstream{conn: conn, br: bufio.NewReaderSize(conn, 4096), route: route}
	if !conn.AfterSTARTTLS {
		greet, err := u.line()
		if err != nil {
			return nil, err
		}
		switch up := strings.ToUpper(greet); {
		case strings.HasPrefix(up, "* OK"):
			u.caps = capsFromCode(greet) // under TLS: trustworthy
		case strings.HasPrefix(up, "* PREAUTH"):
			return nil, &proxy.ProviderError{Msg: "the provider greeted with PREAUTH: it would not check the app's login, so mailproxy refuses it"}
		case strings.HasPrefix(up, "* BYE"):
			return nil, &proxy.ProviderError{Msg: "the provider refused the connection: " + proxy.Printable(greet, 200)}
		default:
			return nil, &proxy.ProviderError{Msg: "the provider's greeting is not IMAP: " + proxy.Printable(greet, 200)}
		}
	}
	if u.caps == nil {
		if err := u.capability(); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (u *upstream) tag() string {
	u.tagN++
	return "mp" + strconv.Itoa(u.tagN)
}

func (u *upstream) send(line string) error { return proxy.SendLine(u.conn, line) }

// line reads one line that must not carry a literal.
func (u *upstream) line() (string, error) { return u.budget.Line(u.br) }

// response reads one whole response: a line, and when it ends in a literal
// {n}, the literal and the rest of the line, repeatedly. It returns the
// first line and the raw bytes (with CRLFs) for forwarding.
func (u *upstream) response() (first string, raw []byte, err error) {
	l, err := u.line()
	if err != nil {
		return "", nil, err
	}
	first = l
	for i := 0; ; i++ {
		raw = append(append(raw, l...), "\r\n"...)
		n, ok := trailingLiteral(l)
		if !ok {
			return first, raw, nil
		}
		if i == maxUpstreamLines {
			return "", nil, &proxy.ProviderError{Msg: "the provider's response is too long"}
		}
		if err := u.budget.Spend(n); err != nil {
			return "", nil, err
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(u.br, lit); err != nil {
			return "", nil, fmt.Errorf("reading from the provider: %w", err)
		}
		raw = append(raw, lit...)
		if l, err = u.line(); err != nil {
			return "", nil, err
		}
	}
}

// trailingLiteral reports a {n} or {n+} at the end of a line.
func trailingLiteral(l string) (int, bool) {
	if !strings.HasSuffix(l, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(l[i+1:len(l)-1], "+"))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// capability asks for the capabilities (again, after TLS).
func (u *upstream) capability() error {
	tag := u.tag()
	if err := u.send(tag + " CAPABILITY"); err != nil {
		return err
	}
	u.caps = map[string]bool{}
	for i := 0; i < maxUpstreamLines; i++ {
		first, _, err := u.response()
		if err != nil {
			return err
		}
		up := strings.ToUpper(first)
		if strings.HasPrefix(up, "* CAPABILITY ") {
			for _, c := range strings.Fields(up)[2:] {
				u.caps[c] = true
			}
			continue
		}
		if strings.HasPrefix(first, tag+" ") {
			if !strings.HasPrefix(up[len(tag)+1:], "OK") {
				return &proxy.ProviderError{Msg: "the provider refused CAPABILITY: " + proxy.Printable(first, 200)}
			}
			return nil
		}
	}
	return &proxy.ProviderError{Msg: "no end to the provider's CAPABILITY reply"}
}

// loginResult is the provider's answer to a login.
type loginResult struct {
	ok bool
	// untagged responses sent before the tagged one, to forward.
	untagged []byte
	// tagged is the tagged status line without its tag ("OK [...] text").
	tagged string
}

// login logs in with the app's credentials: AUTHENTICATE PLAIN (with an
// initial response when SASL-IR is offered) when the provider offers it,
// else LOGIN, unless LOGINDISABLED.
func (u *upstream) login(c proxy.Credentials) (*loginResult, error) {
	if c.Token != (proxy.Secret{}) {
		return u.loginOAuth(c)
	}
	if c.Authzid != "" && !u.caps["AUTH=PLAIN"] {
		// LOGIN cannot carry it, and dropping it would log in as someone
		// else than the app asked for.
		return &loginResult{tagged: "NO [CANNOT] The provider cannot take an authorization identity (it has no AUTHENTICATE PLAIN)"}, nil
	}
	tag := u.tag()
	switch {
	case u.caps["AUTH=PLAIN"]:
		ir := base64.StdEncoding.EncodeToString([]byte(c.Authzid + "\x00" + u.route.User + "\x00" + c.Password.Reveal()))
		if u.caps["SASL-IR"] {
			if err := u.send(tag + " AUTHENTICATE PLAIN " + ir); err != nil {
				return nil, err
			}
		} else {
			if err := u.send(tag + " AUTHENTICATE PLAIN"); err != nil {
				return nil, err
			}
			if err := u.expectContinuation(tag); err != nil {
				return failed(err)
			}
			if err := u.send(ir); err != nil {
				return nil, err
			}
		}
	case !u.caps["LOGINDISABLED"]:
		if err := u.sendLogin(tag, u.route.User, c.Password.Reveal()); err != nil {
			return failed(err)
		}
	default:
		return nil, &proxy.ProviderError{Msg: "the provider offers neither AUTHENTICATE PLAIN nor LOGIN"}
	}
	return u.result(tag, "*")
}

// loginOAuth logs in with an access token: AUTHENTICATE OAUTHBEARER (RFC
// 7628) when the provider offers it, else XOAUTH2. Never a password.
func (u *upstream) loginOAuth(c proxy.Credentials) (*loginResult, error) {
	mech := proxy.OAuthMech(func(m string) bool { return u.caps["AUTH="+m] })
	if mech == "" {
		return nil, &proxy.ProviderError{Msg: "the provider offers neither AUTHENTICATE OAUTHBEARER nor XOAUTH2, which its OAuth2 configuration needs"}
	}
	tag := u.tag()
	ir := base64.StdEncoding.EncodeToString(proxy.OAuthInitialResponse(mech, u.route.User, c.Token))
	if u.caps["SASL-IR"] {
		if err := u.send(tag + " AUTHENTICATE " + mech + " " + ir); err != nil {
			return nil, err
		}
	} else {
		if err := u.send(tag + " AUTHENTICATE " + mech); err != nil {
			return nil, err
		}
		if err := u.expectContinuation(tag); err != nil {
			return failed(err)
		}
		if err := u.send(ir); err != nil {
			return nil, err
		}
	}
	// A refusal is a challenge with the error (JSON), answered so that
	// the provider ends the exchange with its tagged NO.
	return u.result(tag, base64.StdEncoding.EncodeToString(proxy.OAuthFailureAnswer(mech)))
}

// failed turns a refused continuation into a login failure.
func failed(err error) (*loginResult, error) {
	var r *refused
	if errors.As(err, &r) {
		return r.result, nil
	}
	return nil, err
}

// refused carries a tagged refusal that arrived instead of a "+".
type refused struct{ result *loginResult }

func (r *refused) Error() string { return "refused" }

// expectContinuation waits for "+" (forwarding nothing); a tagged reply
// instead is the login's result.
func (u *upstream) expectContinuation(tag string) error {
	var untagged []byte
	for i := 0; i < maxUpstreamLines; i++ {
		first, raw, err := u.response()
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(first, "+"):
			return nil
		case strings.HasPrefix(first, tag+" "):
			r := u.parseTagged(tag, first)
			r.untagged = untagged
			return &refused{r}
		default:
			untagged = append(untagged, raw...)
		}
	}
	return &proxy.ProviderError{Msg: "no continuation from the provider"}
}

// sendLogin sends LOGIN with each argument as a quoted string, or as a
// literal when it holds bytes a quoted string cannot carry.
func (u *upstream) sendLogin(tag, user, pass string) error {
	parts := []string{tag + " LOGIN"}
	for _, s := range []string{user, pass} {
		if quotable(s) {
			parts = append(parts, " "+quote(s))
			continue
		}
		if u.caps["LITERAL+"] || (u.caps["LITERAL-"] && len(s) <= 4096) {
			parts = append(parts, " {"+strconv.Itoa(len(s))+"+}\r\n"+s)
			continue
		}
		if err := u.send(strings.Join(parts, "") + " {" + strconv.Itoa(len(s)) + "}"); err != nil {
			return err
		}
		if err := u.expectContinuation(tag); err != nil {
			return err
		}
		parts = []string{s}
	}
	return u.send(strings.Join(parts, ""))
}

func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 || c >= 0x80 {
			return false
		}
	}
	return true
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// result reads responses up to the tagged one. The first continuation
// request is answered with answer; any further one is cancelled.
func (u *upstream) result(tag, answer string) (*loginResult, error) {
	var untagged bytes.Buffer
	for i := 0; i < maxUpstreamLines; i++ {
		first, raw, err := u.response()
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(first, "+") {
			// More SASL wanted than the mechanism has: cancel (RFC 9051
			// §6.2.2), unless the answer is an OAuth2 error's.
			if err := u.send(answer); err != nil {
				return nil, err
			}
			answer = "*"
			continue
		}
		if strings.HasPrefix(first, tag+" ") {
			r := u.parseTagged(tag, first)
			r.untagged = untagged.Bytes()
			return r, nil
		}
		untagged.Write(raw)
	}
	return nil, &proxy.ProviderError{Msg: "no end to the provider's login reply"}
}

// parseTagged reads the tagged status line. Its literal, if the provider
// sent one, was read by response() and is not forwarded, so its {n} goes
// too; a bare CR becomes a space (see filterLine).
func (u *upstream) parseTagged(tag, line string) *loginResult {
	text := strings.ReplaceAll(line[len(tag)+1:], "\r", " ")
	if _, ok := trailingLiteral(text); ok {
		text = strings.TrimRight(text[:strings.LastIndexByte(text, '{')], " ")
	}
	return &loginResult{ok: strings.HasPrefix(strings.ToUpper(text), "OK"), tagged: text}
}

// capsFromCode returns the capabilities of a [CAPABILITY ...] code, or nil.
func capsFromCode(line string) map[string]bool {
	up := strings.ToUpper(line)
	i := strings.Index(up, "[CAPABILITY ")
	if i < 0 {
		return nil
	}
	rest := up[i+len("[CAPABILITY "):]
	j := strings.IndexByte(rest, ']')
	if j < 0 {
		return nil
	}
	caps := map[string]bool{}
	for _, c := range strings.Fields(rest[:j]) {
		caps[c] = true
	}
	return caps
}
