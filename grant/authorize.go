package grant

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/oauth2"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// Flow is one authorization of mailproxy by the user at provider's
// authorization server, ending in a refresh token. mailproxy's requests
// (token, device authorization) go through Client, which must be the
// policed one (tlsconf.Dialer.HTTPClient); the user's browser is the only
// one to talk to the authorization page.
type Flow struct {
	Provider *policy.Provider
	Client   *http.Client
	// Out receives what the user must do: the URL to open, or the
	// verification URL and user code.
	Out io.Writer
	// Open, if set, opens a URL in the desktop's browser; a failure is
	// not an error (the URL is printed anyway).
	Open func(url string) error
	// Timeout bounds the whole flow; zero means 10 minutes.
	Timeout time.Duration
	// Audit, if set, records the refusals of the redirect listener: a
	// request to it without this flow's state is some other program's.
	Audit *policy.SessionAudit
}

func (f *Flow) context(ctx context.Context) (context.Context, context.CancelFunc) {
	d := f.Timeout
	if d <= 0 {
		d = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return WithClient(ctx, f.Client), cancel
}

// ErrNoRefreshToken is an authorization that gave no refresh token, so
// that mailproxy could not log in once the access token expires.
var ErrNoRefreshToken = errors.New("the provider gave no refresh token (check the scopes: Microsoft needs offline_access)")

// Loopback runs the authorization code flow with PKCE (RFC 7636, S256) and
// a loopback redirect (RFC 8252 §7.3): mailproxy listens on 127.0.0.1 on a
// random port for the one redirect, for the duration of the flow only,
// prints the URL to open, and exchanges the code it receives.
func (f *Flow) Loopback(ctx context.Context) (*oauth2.Token, error) {
	ctx, cancel := f.context(ctx)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the redirect: %w", err)
	}
	defer ln.Close()
	cfg := OAuth2Config(f.Provider, "http://"+ln.Addr().String())
	state := oauth2.GenerateVerifier() // 32 random bytes, as for a verifier
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL(state, oauth2.AccessTypeOffline, oauth2.SetAuthURLParam("prompt", "consent"),
		oauth2.S256ChallengeOption(verifier))

	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	// Requests other than the browser's redirect are some other local
	// program's: each is refused, but only the first of a kind is audited
	// at once, so that a program looping on the listener for the whole
	// flow writes two lines, not one a request.
	noState := &redirectRefusals{audit: f.Audit,
		first: fmt.Sprintf("a request to the authorization redirect on %s without this authorization's state", ln.Addr()),
		more:  fmt.Sprintf("more requests to the authorization redirect on %s without this authorization's state", ln.Addr())}
	other := &redirectRefusals{audit: f.Audit,
		first: fmt.Sprintf("a request to the authorization redirect on %s for another path or method than GET /", ln.Addr()),
		more:  fmt.Sprintf("more requests to the authorization redirect on %s for another path or method than GET /", ln.Addr())}
	srv := &http.Server{
		ReadHeaderTimeout: redirectTimeout,
		ReadTimeout:       redirectTimeout,
		WriteTimeout:      redirectTimeout,
		IdleTimeout:       redirectTimeout,
		MaxHeaderBytes:    16 << 10,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" || r.Method != http.MethodGet {
				// The browser asks for the icon of the page it was sent
				// to: that is no other program's request.
				if r.URL.Path != "/favicon.ico" || r.Method != http.MethodGet {
					other.refuse(r.RemoteAddr)
				}
				http.NotFound(w, r)
				return
			}
			q := r.URL.Query()
			if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
				// Not the redirect of this flow (RFC 6749 §10.12): a
				// local program trying to slip its own code in.
				noState.refuse(r.RemoteAddr)
				http.Error(w, "mailproxy: this is not the answer to the authorization it asked for", http.StatusBadRequest)
				return
			}
			res := result{code: q.Get("code")}
			if e := q.Get("error"); e != "" || res.code == "" {
				res = result{err: fmt.Errorf("the provider did not authorize mailproxy (%s)", policy.Escape(proxy.Printable(e, 40)))}
				fmt.Fprintln(w, "mailproxy was not authorized. You may close this page.")
			} else {
				fmt.Fprintln(w, "mailproxy is authorized. You may close this page and go back to the terminal.")
			}
			select {
			case got <- res:
			default:
			}
		}),
	}
	// One request a connection, few connections at once: a local program
	// cannot hold the listener's file descriptors, nor keep a connection
	// open past redirectTimeout.
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(netutil.LimitListener(ln, redirectConns))
	defer func() {
		srv.Close()
		noState.close()
		other.close()
	}()

	fmt.Fprintf(f.Out, "Open this address in a browser and allow access:\n\n  %s\n\nWaiting for the provider's answer on %s ...\n", authURL, ln.Addr())
	if f.Open != nil {
		f.Open(authURL)
	}
	var res result
	select {
	case res = <-got:
	case <-ctx.Done():
		return nil, errors.New("no answer from the browser in time")
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := cfg.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, tokenError("refused the authorization code", err)
	}
	if tok.RefreshToken == "" {
		return nil, ErrNoRefreshToken
	}
	return tok, nil
}

// The redirect listener's bounds: connections at once, and how long one
// may take (the browser's redirect is one small GET).
const (
	redirectConns   = 8
	redirectTimeout = 5 * time.Second
)

// redirectRefusals aggregates one kind of refusal of the redirect
// listener: the first is audited at once, the rest are counted, and close
// audits their number in one event (with count and since) if there were
// any. A refusal after close is audited on its own: nothing would write
// its count (only requests already being served when the listener closed
// can come then).
type redirectRefusals struct {
	audit       *policy.SessionAudit
	first, more string // the details of the first refusal and of the count

	mu     sync.Mutex
	seen   bool
	closed bool
	count  int64
	since  time.Time
}

func (r *redirectRefusals) refuse(client string) {
	if r.audit == nil {
		return
	}
	r.mu.Lock()
	if r.seen && !r.closed {
		r.count++
		r.mu.Unlock()
		return
	}
	if !r.seen {
		r.seen, r.since = true, time.Now()
	}
	r.mu.Unlock()
	r.audit.Denied(policy.Deny(policy.ReasonInput, "", "%s (from %s)", r.first, client))
}

func (r *redirectRefusals) close() {
	if r.audit == nil {
		return
	}
	r.mu.Lock()
	n, since := r.count, r.since
	r.closed, r.count = true, 0
	r.mu.Unlock()
	if n > 0 {
		r.audit.DeniedCount(policy.Deny(policy.ReasonInput, "", "%d %s, counted since the first", n, r.more), n, since)
	}
}

// Device runs the device authorization grant (RFC 8628): it prints the
// verification URL and the user code, and polls the token endpoint at
// the interval the server asks for, slower after each slow_down.
func (f *Flow) Device(ctx context.Context) (*oauth2.Token, error) {
	if f.Provider.OAuth2.DeviceAuthURL == "" {
		return nil, fmt.Errorf("provider %q has no device_auth_url: use the browser flow (without -device)", f.Provider.Name)
	}
	ctx, cancel := f.context(ctx)
	defer cancel()
	cfg := OAuth2Config(f.Provider, "")
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, tokenError("refused the device authorization", err)
	}
	// What the provider sent goes to the user's terminal: escaped, so that
	// no escape sequence in it can rewrite the screen, and only an https
	// address, so that the user is not sent where anyone on the way could
	// read or change the page.
	if err := f.httpsURL("verification_uri", da.VerificationURI); err != nil {
		return nil, err
	}
	code := policy.Escape(proxy.Printable(da.UserCode, 64))
	if da.VerificationURIComplete != "" {
		if err := f.httpsURL("verification_uri_complete", da.VerificationURIComplete); err != nil {
			return nil, err
		}
		fmt.Fprintf(f.Out, "On any device, open\n\n  %s\n\nor open %s and enter the code %s\n\nWaiting for the authorization ...\n",
			policy.Escape(da.VerificationURIComplete), policy.Escape(da.VerificationURI), code)
	} else {
		fmt.Fprintf(f.Out, "On any device, open\n\n  %s\n\nand enter the code %s\n\nWaiting for the authorization ...\n", policy.Escape(da.VerificationURI), code)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, tokenError("did not issue a token", err)
	}
	if tok.RefreshToken == "" {
		return nil, ErrNoRefreshToken
	}
	return tok, nil
}

// httpsURL refuses, and audits, a device-flow address (the answer's field
// name) that is not an absolute https URL.
func (f *Flow) httpsURL(field, s string) error {
	u, err := url.Parse(s)
	if err == nil && u.Scheme == "https" && u.Host != "" {
		return nil
	}
	d := policy.Deny(policy.ReasonInput, "", "the provider's device authorization answer has a %s that is not an https address (%s): nothing to open", field, policy.Escape(proxy.Printable(s, 100)))
	if f.Audit != nil {
		f.Audit.Denied(d)
	}
	return d
}
