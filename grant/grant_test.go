package grant_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mailproxy/grant"
	"mailproxy/internal/authserver"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
	"mailproxy/tlsconf"
)

// cheap are Argon2id parameters for tests that derive keys often; one
// test uses the defaults.
var cheap = grant.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

const (
	account = "alice@example.test"
	local   = "local pass phrase"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func TestRecordRoundTrip(t *testing.T) {
	r, k, err := grant.Seal("example", account, "refresh-token-1", local, grant.DefaultKDF, now)
	if err != nil {
		t.Fatal(err)
	}
	b := r.Marshal()
	if bytes.Contains(b, []byte("refresh-token-1")) || bytes.Contains(b, []byte(local)) {
		t.Fatal("a secret is in the record in clear")
	}
	r2, err := grant.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r2.Marshal(), b) || r2.Account != account || r2.Provider != "example" || !r2.Created.Equal(now) || !r2.Refreshed.IsZero() {
		t.Fatalf("the record did not round-trip:\n%s", b)
	}
	if r2.KDF != grant.DefaultKDF {
		t.Fatalf("kdf %+v", r2.KDF)
	}
	rt, err := r2.Open(r2.DeriveKey(local))
	if err != nil || rt != "refresh-token-1" {
		t.Fatalf("open: %v", err)
	}
	if _, err := r2.Open(r2.DeriveKey(local + "x")); !errors.Is(err, grant.ErrWrongPassword) {
		t.Fatalf("a wrong password opened the record: %v", err)
	}
	// A reseal (rotation) keeps the key, changes the nonce and the time.
	if err := r.Reseal(k, "refresh-token-2", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r3, err := grant.Parse(r.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if rt, err := r3.Open(r3.DeriveKey(local)); err != nil || rt != "refresh-token-2" || !r3.Refreshed.Equal(now.Add(time.Hour)) {
		t.Fatalf("after reseal: %v", err)
	}
}

// Every single flipped byte of a record is caught: the file no longer
// parses, or it does not open with the right password.
func TestRecordFlippedByte(t *testing.T) {
	r, _, err := grant.Seal("example", account, "refresh-token-1", local, cheap, now)
	if err != nil {
		t.Fatal(err)
	}
	b := r.Marshal()
	for i := range b {
		for _, bit := range []byte{0x01, 0x20} {
			c := bytes.Clone(b)
			c[i] ^= bit
			r2, err := grant.Parse(c)
			if err != nil {
				continue
			}
			if rt, err := r2.Open(r2.DeriveKey(local)); err == nil {
				t.Fatalf("byte %d ^ %#x: the record still opens (%d bytes)", i, bit, len(rt))
			}
		}
	}
}

func TestRecordRefusesBadNames(t *testing.T) {
	for _, a := range []string{"", " alice", "al\nice", "al\x00ice", "alice\u2028"} {
		if _, _, err := grant.Seal("example", a, "rt", local, cheap, now); err == nil {
			t.Errorf("account %q accepted", a)
		}
	}
}

func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	st := &grant.Store{Dir: dir}
	if recs, errs := st.List(); len(recs) != 0 || len(errs) != 0 {
		t.Fatal("a missing store is not empty")
	}
	for _, a := range []string{account, "bob@example.test"} {
		r, _, err := grant.Seal("example", a, "rt-"+a, local, cheap, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store folder mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("%d files in the store, want 2 (no temporary file left)", len(ents))
	}
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", e.Name(), fi.Mode())
		}
		if strings.Contains(e.Name(), "alice") {
			t.Errorf("file name %s names the account", e.Name())
		}
	}
	recs, errs := st.List()
	if len(recs) != 2 || len(errs) != 0 || recs[0].Account != account {
		t.Fatalf("list: %d records, %v", len(recs), errs)
	}
	r, err := st.Load("example", account)
	if err != nil || r.Account != account {
		t.Fatal(err)
	}
	if err := st.Remove("example", account); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load("example", account); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after remove: %v", err)
	}
}

// env is an authorization server, an OAuth2 provider that trusts it, and
// a token store.
type env struct {
	pki    *testkit.PKI
	as     *authserver.Server
	p      *policy.Provider
	store  *grant.Store
	tokens *grant.Tokens
	audit  *testkit.Audit
	sa     *policy.SessionAudit
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvSecret(t, "")
}

// newEnvSecret is newEnv with a confidential client (secret "": public).
func newEnvSecret(t *testing.T, clientSecret string) *env {
	t.Helper()
	pki := testkit.NewPKI(t)
	as, err := authserver.Start(pki.Cert, "mailproxy-test", clientSecret, account)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	p := proxytest.Provider(pki, "example", "imaps://127.0.0.1:1")
	p.OAuth2 = &policy.OAuth2{ClientID: "mailproxy-test", ClientSecret: clientSecret, AuthURL: as.URL + "/authorize", TokenURL: as.URL + "/token",
		DeviceAuthURL: as.URL + "/device", Scopes: []string{"mail"}}
	st := &grant.Store{Dir: filepath.Join(t.TempDir(), "tokens")}
	a := &testkit.Audit{}
	d := &tlsconf.Dialer{Timeout: 10 * time.Second}
	return &env{pki: pki, as: as, p: p, store: st, tokens: &grant.Tokens{Store: st, Dialer: d}, audit: a,
		sa: policy.NewAudit(a, 0).Session("c1", policy.IMAP)}
}

func (e *env) client() *http.Client {
	return (&tlsconf.Dialer{Timeout: 10 * time.Second}).HTTPClient(e.p, e.sa.As(policy.HTTPS))
}

// authorize runs the device flow and stores the grant under local.
func (e *env) authorize(t *testing.T) {
	t.Helper()
	f := &grant.Flow{Provider: e.p, Client: e.client(), Out: &bytes.Buffer{}}
	tok, err := f.Device(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := grant.Seal(e.p.Name, account, tok.RefreshToken, local, cheap, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Save(r); err != nil {
		t.Fatal(err)
	}
}

func (e *env) route() policy.Route {
	return policy.Route{Provider: e.p, User: account}
}

func (e *env) token(t *testing.T, password string) (proxy.Secret, error) {
	t.Helper()
	return e.tokens.AccessToken(context.Background(), e.route(), proxy.NewSecret(password), e.sa)
}

// TestConfidentialClient: a client_secret is sent to the token endpoint
// (which refuses a wrong one) and never reaches the audit log.
func TestConfidentialClient(t *testing.T) {
	e := newEnvSecret(t, "Client-S3cret-0x77")
	e.authorize(t)
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	e.audit.NoSecret(t, e.as.Secrets()...)
	e2 := newEnvSecret(t, "Client-S3cret-0x77")
	e2.authorize(t)
	e2.p.OAuth2.ClientSecret = "Wrong-S3cret-0x78"
	e2.tokens = &grant.Tokens{Store: e2.store, Dialer: &tlsconf.Dialer{Timeout: 10 * time.Second}}
	if _, err := e2.token(t, local); err == nil || strings.Contains(err.Error(), "no longer accepts") {
		t.Fatalf("a wrong client secret: %v", err)
	}
	// A wrong secret is the configuration's fault, not the grant's: once
	// mended, the same grant works.
	e2.p.OAuth2.ClientSecret = "Client-S3cret-0x77"
	if _, err := e2.token(t, local); err != nil {
		t.Fatalf("after the secret is mended: %v", err)
	}
	e2.audit.NoSecret(t, append(e2.as.Secrets(), "Wrong-S3cret-0x78")...)
}

func TestTokensRefreshCacheRotate(t *testing.T) {
	e := newEnv(t)
	e.as.Rotate = true
	e.authorize(t)
	before, _ := os.ReadFile(filepath.Join(e.store.Dir, mustOne(t, e.store.Dir)))

	tok, err := e.token(t, local)
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := e.as.Valid(tok.Reveal()); !ok || u != account {
		t.Fatal("the access token is not the server's")
	}
	// Rotated: the record was rewritten, and the old refresh token is dead.
	after, _ := os.ReadFile(filepath.Join(e.store.Dir, mustOne(t, e.store.Dir)))
	if bytes.Equal(before, after) {
		t.Fatal("the rotated refresh token was not written back")
	}
	r, err := e.store.Load(e.p.Name, account)
	if err != nil || r.Refreshed.IsZero() {
		t.Fatalf("refreshed time not recorded: %v", err)
	}
	// A second login uses the cached token: no request.
	tok2, err := e.token(t, local)
	if err != nil || tok2 != tok || e.as.Count("refresh") != 1 {
		t.Fatalf("second login: %v, %d refreshes", err, e.as.Count("refresh"))
	}
	// The provider refused it: the next login refreshes with the rotated
	// refresh token.
	e.tokens.Rejected(e.route(), tok)
	tok3, err := e.token(t, local)
	if err != nil || tok3 == tok || e.as.Count("refresh") != 2 {
		t.Fatalf("after rejection: %v, %d refreshes", err, e.as.Count("refresh"))
	}
	ev := e.audit.Find(t, policy.EventOAuth2Token)
	if len(ev) != 2 || ev[0]["result"] != "refreshed" || ev[0]["expires_in"] != float64(3600) || ev[0]["account"] != account {
		t.Fatalf("oauth2.token events: %v", ev)
	}
	for _, c := range e.audit.Find(t, policy.EventUpstreamConnect) {
		if c["proto"] != "https" || c["conn"] != "c1" {
			t.Fatalf("token endpoint connection audited as %v", c)
		}
	}
	if n := len(e.audit.Find(t, policy.EventUpstreamTLS)); n < 2 {
		t.Fatalf("%d upstream.tls events", n)
	}
	e.audit.NoSecret(t, append(e.as.Secrets(), local)...)
}

func mustOne(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("want one record in %s: %v", dir, err)
	}
	return ents[0].Name()
}

func TestTokensWrongPasswordAndNoGrant(t *testing.T) {
	e := newEnv(t)
	var ae *proxy.AuthError
	if _, err := e.token(t, local); !errors.As(err, &ae) || !strings.Contains(ae.Text, "mailproxy authorize") {
		t.Fatalf("no grant: %v", err)
	}
	// User names with no record are not remembered (a flood of them must
	// not grow memory).
	if n := e.tokens.Remembered(); n != 0 {
		t.Fatalf("%d accounts remembered before any grant", n)
	}
	e.authorize(t)
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	// A wrong password fails even while a token is cached.
	if _, err := e.token(t, "wrong"); !errors.As(err, &ae) || !strings.Contains(ae.Text, "authentication failed") {
		t.Fatalf("wrong password: %v", err)
	}
	if e.as.Count("refresh") != 1 {
		t.Fatalf("%d refreshes", e.as.Count("refresh"))
	}
}

// Concurrent logins of one account make one refresh (and, with rotation,
// write one record that opens).
func TestTokensSingleFlight(t *testing.T) {
	e := newEnv(t)
	e.as.Rotate = true
	e.authorize(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.token(t, local)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := e.as.Count("refresh"); n != 1 {
		t.Fatalf("%d refreshes for 8 concurrent logins", n)
	}
	r, err := e.store.Load(e.p.Name, account)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open(r.DeriveKey(local)); err != nil {
		t.Fatal(err)
	}
}

func TestTokensRevoked(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	e.as.Revoke(account)
	var ae *proxy.AuthError
	for i := range 2 {
		_, err := e.token(t, local)
		if !errors.As(err, &ae) || !strings.Contains(ae.Text, "no longer accepts") || !strings.Contains(ae.Text, "mailproxy authorize -provider example "+account) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	// Known revoked: the second login did not ask again.
	if n := e.as.Count("refresh"); n != 1 {
		t.Fatalf("%d refreshes", n)
	}
	ev := e.audit.Find(t, policy.EventOAuth2Token)
	if len(ev) != 2 || ev[0]["result"] != "revoked" {
		t.Fatalf("oauth2.token events: %v", ev)
	}
	// A failure that is not a revocation is temporary.
	e2 := newEnv(t)
	e2.authorize(t)
	e2.as.FailNext("temporarily_unavailable")
	_, err := e2.token(t, local)
	var pe *proxy.ProviderError
	if !errors.As(err, &pe) || errors.As(err, &ae) {
		t.Fatalf("temporary failure: %v", err)
	}
	if ev := e2.audit.Find(t, policy.EventOAuth2Token); len(ev) != 1 || ev[0]["result"] != "failed" {
		t.Fatalf("events: %v", ev)
	}
}

// The token endpoint is dialled under the provider's policy: a host off
// the allowlist is refused and audited.
func TestTokenEndpointPoliced(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	e.p.Hosts = []string{"localhost"} // the token URL names 127.0.0.1
	_, err := e.token(t, local)
	var d *policy.Denied
	if !errors.As(err, &d) || d.Reason != policy.ReasonNonProviderHost {
		t.Fatalf("got %v", err)
	}
	if ev := e.audit.Find(t, policy.EventDenied); len(ev) != 1 || ev[0]["proto"] != "https" {
		t.Fatalf("denied events: %v", ev)
	}
}

func TestFlowLoopback(t *testing.T) {
	e := newEnv(t)
	out := &bytes.Buffer{}
	opened := make(chan string, 1)
	f := &grant.Flow{Provider: e.p, Client: e.client(), Out: out, Open: func(u string) error { opened <- u; return nil },
		Audit: e.sa.As(policy.HTTPS)}
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: e.pki.ServerConfig().Clone()}}
	browser.Transport.(*http.Transport).TLSClientConfig.RootCAs = e.pki.CA.Pool()
	forged := make(chan int, 1)
	go func() {
		u := <-opened
		// Another local program first answers with a code of its own.
		au, _ := url.Parse(u)
		resp, err := http.Get(au.Query().Get("redirect_uri") + "/?state=guess&code=theirs")
		if err == nil {
			resp.Body.Close()
			forged <- resp.StatusCode
		} else {
			forged <- 0
		}
		resp, err = browser.Get(u) // the server redirects to the loopback listener
		if err == nil {
			resp.Body.Close()
		}
	}()
	tok, err := f.Loopback(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || e.as.Count("code") != 1 {
		t.Fatal("no refresh token")
	}
	if code := <-forged; code != http.StatusBadRequest {
		t.Fatalf("a redirect without the state: %d", code)
	}
	if ev := e.audit.Find(t, policy.EventDenied); len(ev) != 1 || ev[0]["reason"] != "input" || ev[0]["proto"] != "https" {
		t.Fatalf("denied events: %v", ev)
	}
	if !strings.Contains(out.String(), e.as.URL+"/authorize?") || !strings.Contains(out.String(), "code_challenge_method=S256") {
		t.Fatalf("printed: %s", out)
	}
	e.audit.NoSecret(t, e.as.Secrets()...)
	for _, s := range e.as.Secrets() {
		if strings.Contains(out.String(), s) {
			t.Fatal("a code, verifier or token was printed")
		}
	}
}

// TestFlowLoopbackFlood: a local program looping on the redirect listener
// is refused every time, but writes two audit records a kind of request
// (the first, and one with the count of the rest when the flow ends), not
// one a request; the browser's icon request is not audited.
func TestFlowLoopbackFlood(t *testing.T) {
	e := newEnv(t)
	opened := make(chan string, 1)
	f := &grant.Flow{Provider: e.p, Client: e.client(), Out: &bytes.Buffer{}, Open: func(u string) error { opened <- u; return nil },
		Audit: e.sa.As(policy.HTTPS)}
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: e.pki.ServerConfig().Clone()}}
	browser.Transport.(*http.Transport).TLSClientConfig.RootCAs = e.pki.CA.Pool()
	const forged, wrongPath = 40, 3
	statuses := make(chan []int, 1)
	go func() {
		u := <-opened
		au, _ := url.Parse(u)
		redirect := au.Query().Get("redirect_uri")
		var got []int
		send := func(method, u string) {
			req, _ := http.NewRequest(method, u, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				got = append(got, 0)
				return
			}
			resp.Body.Close()
			if !resp.Close {
				got = append(got, -1) // a connection kept alive
				return
			}
			got = append(got, resp.StatusCode)
		}
		for i := range forged {
			send(http.MethodGet, fmt.Sprintf("%s/?state=guess%d&code=theirs", redirect, i))
		}
		for range wrongPath - 1 {
			send(http.MethodGet, redirect+"/other")
		}
		send(http.MethodPost, redirect+"/")
		send(http.MethodGet, redirect+"/favicon.ico")
		statuses <- got
		resp, err := browser.Get(u) // the server redirects to the loopback listener
		if err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := f.Loopback(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := <-statuses
	for i, code := range got {
		want := http.StatusBadRequest
		if i >= forged {
			want = http.StatusNotFound
		}
		if code != want {
			t.Fatalf("request %d: %d, want %d", i, code, want)
		}
	}
	ev := e.audit.Find(t, policy.EventDenied)
	if len(ev) != 4 {
		t.Fatalf("%d denied events, want 4: %v", len(ev), ev)
	}
	for _, want := range []struct {
		about string
		count float64
	}{{"without this authorization's state", forged - 1}, {"another path or method", wrongPath - 1}} {
		var first, summary []map[string]any
		for _, x := range ev {
			if d, _ := x["detail"].(string); strings.Contains(d, want.about) {
				if _, ok := x["count"]; ok {
					summary = append(summary, x)
				} else {
					first = append(first, x)
				}
			}
		}
		if len(first) != 1 || len(summary) != 1 || first[0]["reason"] != "input" || summary[0]["reason"] != "input" ||
			summary[0]["count"] != want.count || summary[0]["since"] == nil ||
			!strings.Contains(summary[0]["detail"].(string), fmt.Sprint(want.count)+" more requests") {
			t.Fatalf("%s: first %v, summary %v", want.about, first, summary)
		}
	}
}

// TestFlowLoopbackIdle: the redirect listener closes a connection that
// sends nothing, while the flow still waits: a local program cannot hold
// its few connections for the whole flow.
func TestFlowLoopbackIdle(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the listener's read timeout")
	}
	e := newEnv(t)
	opened := make(chan string, 1)
	f := &grant.Flow{Provider: e.p, Client: e.client(), Out: &bytes.Buffer{}, Open: func(u string) error { opened <- u; return nil }}
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: e.pki.ServerConfig().Clone()}}
	browser.Transport.(*http.Transport).TLSClientConfig.RootCAs = e.pki.CA.Pool()
	closed := make(chan error, 1)
	go func() {
		u := <-opened
		au, _ := url.Parse(u)
		ru, _ := url.Parse(au.Query().Get("redirect_uri"))
		c, err := net.Dial("tcp", ru.Host)
		if err != nil {
			closed <- err
			return
		}
		c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		} else {
			err = fmt.Errorf("the idle connection: %v", err)
		}
		closed <- err // before the flow ends, which would close it too
		resp, err := browser.Get(u)
		if err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := f.Loopback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// TestFlowDeviceLyingProvider: what the device authorization answer holds
// reaches the terminal escaped, and an address that is not https is
// refused before any poll.
func TestFlowDeviceLyingProvider(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []string{"http://example.test/device", "javascript:alert(1)", "/device", e.as.URL + "/device\x1b[2J"} {
		for _, field := range []string{"verification_uri", "verification_uri_complete"} {
			e.as.DeviceFields = map[string]any{field: bad}
			out := &bytes.Buffer{}
			f := &grant.Flow{Provider: e.p, Client: e.client(), Out: out, Audit: e.sa.As(policy.HTTPS)}
			_, err := f.Device(context.Background())
			if !errors.Is(err, policy.ReasonInput) || !strings.Contains(err.Error(), field+" that is not an https address") || strings.Contains(err.Error(), "\x1b") || out.Len() != 0 {
				t.Fatalf("%s %q: %v; printed %q", field, bad, err, out)
			}
		}
	}
	if n := e.as.Count("poll"); n != 0 {
		t.Fatalf("%d polls after a refused answer", n)
	}
	if ev := e.audit.Find(t, policy.EventDenied); len(ev) != 8 || ev[0]["reason"] != "input" || strings.Contains(e.audit.String(), "\x1b") {
		t.Fatalf("denied events: %v", ev)
	}
	e.as.DeviceFields = map[string]any{
		"user_code":                 "\x1b]0;owned\x07WDJB\u202e",
		"verification_uri":          e.as.URL + "/device\u2028",
		"verification_uri_complete": e.as.URL + "/device?code=\u009b31m",
	}
	out := &bytes.Buffer{}
	f := &grant.Flow{Provider: e.p, Client: e.client(), Out: out}
	if _, err := f.Device(context.Background()); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	if strings.ContainsAny(printed, "\x1b\x07\u009b\u202e\u2028") {
		t.Fatalf("control characters reached the terminal: %q", printed)
	}
	for _, want := range []string{"/device?code=\\u009b31m", "/device\\u2028", "?]0;owned?WDJB\\u202e"} {
		if !strings.Contains(printed, want) {
			t.Fatalf("printed %q, want %q in it", printed, want)
		}
	}
}

func TestFlowDeviceSlowDown(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a slow_down")
	}
	e := newEnv(t)
	e.as.DevicePending = 1
	e.as.SlowDown = true
	out := &bytes.Buffer{}
	f := &grant.Flow{Provider: e.p, Client: e.client(), Out: out}
	tok, err := f.Device(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || !strings.Contains(out.String(), "WDJB-MJHT") {
		t.Fatalf("printed: %s", out)
	}
	polls := e.as.Polls()
	if len(polls) != 3 {
		t.Fatalf("%d polls", len(polls))
	}
	// interval 1 s, then 1 + 5 s after slow_down (RFC 8628 §3.5).
	if d := polls[2].Sub(polls[1]); d < 5*time.Second {
		t.Fatalf("polled again %v after slow_down", d)
	}
	if d := polls[1].Sub(polls[0]); d < 900*time.Millisecond {
		t.Fatalf("polled again %v after authorization_pending", d)
	}
}

// BenchmarkDeriveKey is what a login that must refresh its access token
// pays for the local password with the default Argon2id parameters (and
// what an attacker pays per guess on a stolen record).
func BenchmarkDeriveKey(b *testing.B) {
	r, _, err := grant.Seal("example", account, "rt", local, cheap, now)
	if err != nil {
		b.Fatal(err)
	}
	r.KDF = grant.DefaultKDF
	b.ReportAllocs()
	for b.Loop() {
		r.DeriveKey(local)
	}
}

func TestTokensDamagedRecord(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	name := filepath.Join(e.store.Dir, mustOne(t, e.store.Dir))
	b, _ := os.ReadFile(name)
	os.WriteFile(name, bytes.Replace(b, []byte("mailproxy-grant 1"), []byte("mailproxy-grant 9"), 1), 0o600)
	var ae *proxy.AuthError
	if _, err := e.token(t, local); !errors.As(err, &ae) || !strings.Contains(ae.Text, "damaged") || !strings.Contains(ae.Text, "mailproxy authorize") {
		t.Fatalf("damaged record: %v", err)
	}
}

// A cached token is used until a minute before it expires; then the next
// login refreshes.
func TestTokensExpiry(t *testing.T) {
	e := newEnv(t)
	clock := now
	e.tokens.Now = func() time.Time { return clock }
	e.as.AccessLifetime = 10 * time.Minute
	e.authorize(t)
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	// The server's expiry is from the real clock; the cache's from it too.
	clock = time.Now().Add(8 * time.Minute)
	if _, err := e.token(t, local); err != nil || e.as.Count("refresh") != 1 {
		t.Fatalf("within the lifetime: %v, %d refreshes", err, e.as.Count("refresh"))
	}
	clock = time.Now().Add(9*time.Minute + 30*time.Second)
	if _, err := e.token(t, local); err != nil || e.as.Count("refresh") != 2 {
		t.Fatalf("in the last minute: %v, %d refreshes", err, e.as.Count("refresh"))
	}
}

// A new authorization with another local password, or a removed grant,
// takes effect at once, even while an access token is cached.
func TestTokensRecordReplaced(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	r, _, err := grant.Seal(e.p.Name, account, e.as.IssueRefresh(account), "another local password", cheap, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Save(r); err != nil {
		t.Fatal(err)
	}
	var ae *proxy.AuthError
	if _, err := e.token(t, local); !errors.As(err, &ae) {
		t.Fatalf("the old password still works: %v", err)
	}
	if _, err := e.token(t, "another local password"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Remove(e.p.Name, account); err != nil {
		t.Fatal(err)
	}
	if _, err := e.token(t, "another local password"); !errors.As(err, &ae) || !strings.Contains(ae.Text, "no OAuth2 authorization") {
		t.Fatalf("after removal: %v", err)
	}
}

// TestTokensRotatedButNotStored: the provider rotated the refresh token
// and the disk refused the new record. The login goes on, the audit says
// the grant is in memory only, and the next refresh uses the rotated token
// (the old one is dead at the server) and writes the record at last.
func TestTokensRotatedButNotStored(t *testing.T) {
	e := newEnv(t)
	e.as.Rotate = true
	e.authorize(t)
	before, _ := os.ReadFile(filepath.Join(e.store.Dir, mustOne(t, e.store.Dir)))
	restore := grant.FailSaves(errors.New("no space left on device"))
	tok, err := e.token(t, local)
	restore()
	if err != nil {
		t.Fatalf("the login failed although the token is good: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(e.store.Dir, mustOne(t, e.store.Dir))); !bytes.Equal(before, after) {
		t.Fatal("the record changed although Save failed")
	}
	ev := e.audit.Find(t, policy.EventOAuth2Token)
	if len(ev) != 1 || ev[0]["result"] != "refreshed" || !strings.Contains(fmt.Sprint(ev[0]["error"]), "kept in memory") {
		t.Fatalf("oauth2.token events: %v", ev)
	}
	// The provider refuses the access token: the next login must refresh
	// with the rotated refresh token, which only memory holds.
	e.tokens.Rejected(e.route(), tok)
	if _, err := e.token(t, local); err != nil {
		t.Fatalf("refresh with the rotated token held in memory: %v", err)
	}
	if e.as.Count("refresh") != 2 {
		t.Fatalf("%d refreshes", e.as.Count("refresh"))
	}
	// Written now: a new process (an empty Tokens) opens it and refreshes.
	fresh := &grant.Tokens{Store: e.store, Dialer: e.tokens.Dialer}
	if _, err := fresh.AccessToken(context.Background(), e.route(), proxy.NewSecret(local), e.sa); err != nil {
		t.Fatalf("the record on disk after the retry: %v", err)
	}
}

// TestTokensBackOff: after three distinct wrong local passwords in a row,
// no new password is tried (no key derivation) until the back-off has
// passed, and each such refusal is on record. The password that last
// opened the record is not held up, cached token or not (whoever sends it
// needs no guessing); a wrong password sent again is refused at once,
// without a derivation and without pushing the back-off further (an app
// still holding an old password must not lock the user out); success
// resets.
func TestTokensBackOff(t *testing.T) {
	e := newEnv(t)
	clock := time.Now()
	e.tokens.Now = func() time.Time { return clock }
	e.authorize(t)
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	var derived atomic.Int32
	defer grant.OnDerive(func() { derived.Add(1) })()
	var ae *proxy.AuthError
	for i := range 3 {
		if _, err := e.token(t, fmt.Sprintf("guess-%d", i)); !errors.As(err, &ae) || !strings.Contains(ae.Text, "wrong user name or local password") {
			t.Fatalf("guess %d: %v", i+1, err)
		}
	}
	// The same wrong password again: refused, no derivation, no limit.
	derived.Store(0)
	for range 5 {
		if _, err := e.token(t, "guess-1"); !errors.As(err, &ae) || !strings.Contains(ae.Text, "wrong user name or local password") {
			t.Fatalf("a repeated guess: %v", err)
		}
	}
	if n := derived.Load(); n != 0 {
		t.Fatalf("a repeated wrong password cost %d key derivations", n)
	}
	// The right password gets the cached token, and uncached it is not
	// held up either.
	if _, err := e.token(t, local); err != nil {
		t.Fatalf("cached token during the back-off: %v", err)
	}
	e.tokens.Rejected(e.route(), mustToken(t, e))
	if _, err := e.token(t, local); err != nil {
		t.Fatalf("the known password during the back-off: %v", err)
	}
	// A new guess waits.
	if _, err := e.token(t, "guess-new"); !errors.As(err, &ae) || !strings.Contains(ae.Text, "try again in") {
		t.Fatalf("a new guess during the back-off: %v", err)
	}
	denied := e.audit.Find(t, policy.EventDenied)
	if len(denied) != 1 || denied[0]["reason"] != "limit" || !strings.Contains(fmt.Sprint(denied[0]["detail"]), "3 wrong local passwords") {
		t.Fatalf("policy.denied: %v", denied)
	}
	clock = clock.Add(2 * time.Second)
	if _, err := e.token(t, "guess-new"); !errors.As(err, &ae) || strings.Contains(ae.Text, "try again") {
		t.Fatalf("after the back-off: %v", err)
	}
	clock = clock.Add(3 * time.Second)
	e.tokens.Rejected(e.route(), mustToken(t, e))
	if _, err := e.token(t, local); err != nil {
		t.Fatalf("after the back-off: %v", err)
	}
	// The known password reset nothing: guessing stays held up.
	e.token(t, "guess-other")
	if _, err := e.token(t, "guess-another"); !errors.As(err, &ae) || !strings.Contains(ae.Text, "try again") {
		t.Fatalf("guessing beside the known password: %v", err)
	}
	// A password that had to be checked (here: the grant was authorized
	// again, so no password has opened the new record yet) resets: the
	// next wrong passwords are free again.
	clock = clock.Add(time.Minute)
	e.authorize(t)
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := e.token(t, fmt.Sprint("again-", i)); !errors.As(err, &ae) || strings.Contains(ae.Text, "try again") {
			t.Fatalf("wrong password %d after a reset: %v", i+1, err)
		}
	}
}

// mustToken is the access token cached for the local password.
func mustToken(t *testing.T, e *env) proxy.Secret {
	t.Helper()
	tok, err := e.token(t, local)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestKeyDerivationsBounded: logins of many accounts at once derive at
// most KDFSlots keys at a time (each holds Argon2id's memory), and the
// others wait their turn rather than fail. Each derivation waits in its
// slot until KDFSlots are in at once (a barrier, not a sleep): so they do
// overlap that much, whatever the machine's load, and one more would be
// seen.
func TestKeyDerivationsBounded(t *testing.T) {
	e := newEnv(t)
	accounts := 4 * grant.KDFSlots // whole rounds: no barrier waits for a derivation that never comes
	for i := range accounts {
		r, _, err := grant.Seal(e.p.Name, fmt.Sprintf("user%d@example.test", i), "refresh-"+fmt.Sprint(i), local, cheap, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	type round struct {
		in   int
		full chan struct{} // closed when KDFSlots derivations of the round are in
	}
	var mu sync.Mutex
	in, most, total := 0, 0, 0
	cur := &round{full: make(chan struct{})}
	defer grant.OnDerive(func() {
		mu.Lock()
		in++
		total++
		most = max(most, in)
		r := cur
		if r.in++; r.in == grant.KDFSlots {
			close(r.full)
			cur = &round{full: make(chan struct{})}
		}
		mu.Unlock()
		select {
		case <-r.full:
		case <-time.After(time.Minute):
			t.Error("derivations did not run KDFSlots at once")
		}
		mu.Lock()
		in--
		mu.Unlock()
	})()
	var wg sync.WaitGroup
	for i := range accounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			route := e.route()
			route.User = fmt.Sprintf("user%d@example.test", i)
			var ae *proxy.AuthError
			if _, err := e.tokens.AccessToken(context.Background(), route, proxy.NewSecret("wrong"), e.sa); !errors.As(err, &ae) {
				t.Errorf("%s: %v", route.User, err)
			}
		}()
	}
	wg.Wait()
	if total != accounts || most != grant.KDFSlots || grant.KDFSlots != 2 { // 2: the bound the docs state
		t.Fatalf("%d derivations, at most %d at once; want %d, %d at once (KDFSlots %d, the docs say 2)", total, most, accounts, grant.KDFSlots, grant.KDFSlots)
	}
}

// TestTokenEndpointNonsenseNotQuoted: a token endpoint that answers 200
// with something that is not a token response (here the access token as a
// number, which encoding/json's error would quote) fails the login
// without any of the answer in the error or the audit.
func TestTokenEndpointNonsenseNotQuoted(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	e.as.LieNext(`{"access_token": 918273645, "token_type": "Bearer", "refresh_token": "R-0x51"}`)
	_, err := e.token(t, local)
	var pe *proxy.ProviderError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "could not be read") {
		t.Fatalf("got %v", err)
	}
	for _, secret := range []string{"918273645", "R-0x51"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(e.audit.String(), secret) {
			t.Errorf("%s shown: %v", secret, err)
		}
	}
}

// TestKeyDerivationSlotTimeout: a login that finds every derivation slot
// busy until its time is up is refused as a temporary failure (not a
// wrong password: the app must not ask the user for another), and the
// refusal is on record (limit).
func TestKeyDerivationSlotTimeout(t *testing.T) {
	e := newEnv(t)
	routes := make([]policy.Route, grant.KDFSlots+1) // one account each: no account lock shared
	for i := range routes {
		routes[i] = e.route()
		routes[i].User = fmt.Sprintf("slot%d@example.test", i)
		r, _, err := grant.Seal(e.p.Name, routes[i].User, "refresh-x", local, cheap, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	busy := make(chan struct{}, len(routes))
	defer grant.OnDerive(func() { busy <- struct{}{}; <-release })()
	var wg sync.WaitGroup
	for _, r := range routes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.tokens.AccessToken(context.Background(), r, proxy.NewSecret("wrong"), e.sa)
		}()
	}
	for range grant.KDFSlots {
		<-busy
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := e.tokens.AccessToken(ctx, routes[0], proxy.NewSecret(local), e.sa)
	close(release)
	wg.Wait()
	var be *proxy.BusyError
	if !errors.As(err, &be) || !strings.Contains(be.Text, "try again") {
		t.Errorf("got %v", err)
	}
	d := e.audit.Find(t, policy.EventDenied)
	if len(d) != 1 || d[0]["reason"] != "limit" {
		t.Errorf("policy.denied: %v", d)
	}
}

// TestTokensRotatedTwiceNotStored: the disk refuses two rotated records in
// a row; memory keeps the newest grant each time, and the login after
// uses it (the older ones are retired at the server) and writes it.
func TestTokensRotatedTwiceNotStored(t *testing.T) {
	e := newEnv(t)
	e.as.Rotate = true
	e.authorize(t)
	restore := grant.FailSaves(errors.New("read-only file system"))
	for i := range 2 {
		tok, err := e.token(t, local)
		if err != nil {
			t.Fatalf("refresh %d with the disk refusing: %v", i+1, err)
		}
		e.tokens.Rejected(e.route(), tok)
	}
	restore()
	if _, err := e.token(t, local); err != nil {
		t.Fatalf("the third refresh, with the grant only memory held: %v", err)
	}
	if n := e.as.Count("refresh"); n != 3 {
		t.Fatalf("%d refreshes", n)
	}
	fresh := &grant.Tokens{Store: e.store, Dialer: e.tokens.Dialer}
	if _, err := fresh.AccessToken(context.Background(), e.route(), proxy.NewSecret(local), e.sa); err != nil {
		t.Fatalf("the record written at last: %v", err)
	}
	if ev := e.audit.Find(t, policy.EventOAuth2Token); len(ev) < 4 || slices.ContainsFunc(ev, func(m map[string]any) bool { return m["result"] == "revoked" }) {
		t.Fatalf("oauth2.token events: %v", ev)
	}
}

// TestTokensNotStoredStillCached: without a rotation, a record the disk
// refuses leaves the grant on disk valid, and the token is cached for it:
// the next login costs no derivation and no refresh.
func TestTokensNotStoredStillCached(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	defer grant.FailSaves(errors.New("no space left on device"))()
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	var derived atomic.Int32
	defer grant.OnDerive(func() { derived.Add(1) })()
	if _, err := e.token(t, local); err != nil {
		t.Fatal(err)
	}
	if derived.Load() != 0 || e.as.Count("refresh") != 1 {
		t.Fatalf("%d derivations, %d refreshes", derived.Load(), e.as.Count("refresh"))
	}
}

// TestTokensRefreshDoesNotUndo: `tokens remove` or `mailproxy authorize`
// while a login refreshes the old grant stands: the login goes on, and the
// old grant is not written back over (or in place of) the new state.
func TestTokensRefreshDoesNotUndo(t *testing.T) {
	for _, what := range []string{"removed", "replaced"} {
		t.Run(what, func(t *testing.T) {
			e := newEnv(t)
			e.authorize(t)
			var newer []byte
			restore := grant.OnDerive(func() {
				if what == "removed" {
					e.store.Remove(e.p.Name, account)
					return
				}
				r, _, err := grant.Seal(e.p.Name, account, "refresh-newer", "a new local password", cheap, now)
				if err != nil {
					t.Error(err)
					return
				}
				e.store.Save(r)
				newer = r.Marshal()
			})
			_, err := e.token(t, local)
			restore()
			if err != nil {
				t.Fatalf("the login: %v", err)
			}
			if what == "removed" {
				if recs, _ := e.store.List(); len(recs) != 0 {
					t.Fatal("the removed grant came back")
				}
				return
			}
			b, _ := os.ReadFile(filepath.Join(e.store.Dir, mustOne(t, e.store.Dir)))
			if !bytes.Equal(b, newer) {
				t.Fatal("the new authorization was overwritten")
			}
			// Nothing of the old grant is cached: the new password works,
			// the old one does not.
			if _, err := e.token(t, local); err == nil {
				t.Fatal("the old local password still logs in")
			}
		})
	}
}

// TestTokensAccountTurnTimesOut: a login that waits for its account's other
// login (stalled at the token endpoint) past its own deadline gives up as
// a temporary failure, on record.
func TestTokensAccountTurnTimesOut(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	stalled, release := make(chan struct{}), make(chan struct{})
	restore := grant.OnDerive(func() { close(stalled); <-release })
	done := make(chan error, 1)
	go func() { _, err := e.token(t, local); done <- err }()
	<-stalled
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := e.tokens.AccessToken(ctx, e.route(), proxy.NewSecret(local), e.sa)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the first login: %v", err)
	}
	restore()
	var be *proxy.BusyError
	if !errors.As(err, &be) {
		t.Fatalf("the waiting login: %v", err)
	}
	if d := e.audit.Find(t, policy.EventDenied); len(d) != 1 || d[0]["reason"] != "limit" {
		t.Fatalf("policy.denied: %v", d)
	}
}

// TestStoreRefusesOddFiles: a FIFO or a symbolic link in the token folder
// is not read (a FIFO would block the open, and the account's logins).
func TestStoreRefusesOddFiles(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	name := filepath.Join(e.store.Dir, mustOne(t, e.store.Dir))
	target := filepath.Join(t.TempDir(), "elsewhere")
	os.Rename(name, target)
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Load(e.p.Name, account); err == nil {
		t.Fatal("a symbolic link was read")
	}
	os.Remove(name)
	if err := syscall.Mkfifo(name, 0o600); err != nil {
		t.Skipf("no FIFO: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := e.store.Load(e.p.Name, account); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a FIFO was read")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Load blocked on a FIFO")
	}
}

// TestTokensShortLivedCached: an access token that lasts less than two
// minutes is still cached for half its life, rather than never.
func TestTokensShortLivedCached(t *testing.T) {
	e := newEnv(t)
	clock := time.Now()
	e.tokens.Now = func() time.Time { return clock }
	e.as.AccessLifetime = 60 * time.Second
	e.authorize(t)
	for range 3 {
		if _, err := e.token(t, local); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.as.Count("refresh"); n != 1 {
		t.Fatalf("%d refreshes for a 60 s token used at once", n)
	}
}

// TestRecordHoldsLongRefreshTokens: a refresh token as long as a record
// can seal is stored and read back (a rotated one that did not fit would
// lose the grant); one byte more is refused before anything is written.
func TestRecordHoldsLongRefreshTokens(t *testing.T) {
	longest := strings.Repeat("r", 16<<10-16)
	r, k, err := grant.Seal("example", account, longest, local, cheap, now)
	if err != nil {
		t.Fatal(err)
	}
	back, err := grant.Parse(r.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := back.Open(k); err != nil || got != longest {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if _, _, err := grant.Seal("example", account, longest+"r", local, cheap, now); err == nil {
		t.Fatal("a refresh token longer than a record holds was sealed")
	}
}

// TestTokenEndpointErrorHidesQuery: a request that does not get through
// names the token endpoint's host, never its URL (a careless token_url
// may carry a secret in its query).
func TestTokenEndpointErrorHidesQuery(t *testing.T) {
	e := newEnv(t)
	e.authorize(t)
	e.p.OAuth2.TokenURL += "?k=Query-S3cret-0x9"
	e.p.Hosts = []string{"localhost"} // the token URL names 127.0.0.1: refused
	_, err := e.token(t, local)
	var d *policy.Denied
	if !errors.As(err, &d) || strings.Contains(err.Error(), "Query-S3cret") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("got %v", err)
	}
	e.audit.NoSecret(t, "Query-S3cret-0x9")
}
