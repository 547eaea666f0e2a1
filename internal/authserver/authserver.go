// Package authserver is an OAuth2 authorization server for mailproxy's
// tests: the authorization code grant with PKCE (S256 only), the device
// authorization grant with authorization_pending and slow_down, refresh
// with optional rotation, revocation, and token introspection (RFC 7662)
// for Dovecot's oauth2 passdb. It approves every request for its one
// user at once, and serves over TLS on 127.0.0.1. Tests only.
package authserver

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Server is a running authorization server.
type Server struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// ClientID and ClientSecret are the one registered client; an empty
	// secret makes it public.
	ClientID, ClientSecret string
	// User is who approves every authorization.
	User string
	// Rotate makes every refresh issue a new refresh token and retire the
	// old one.
	Rotate bool
	// AccessLifetime is how long an access token lasts (1h by default).
	AccessLifetime time.Duration
	// DevicePending is how many polls answer authorization_pending before
	// one answers slow_down (when SlowDown) and then the token.
	DevicePending int
	SlowDown      bool
	// DeviceInterval is the polling interval the device flow asks for, in
	// seconds (1 by default).
	DeviceInterval int
	// DeviceFields replace or add fields of the device authorization
	// answer: a provider that lies (verification_uri, user_code ...).
	DeviceFields map[string]any
	// IntrospectUser and IntrospectPassword protect /introspect (HTTP
	// basic authentication) when set.
	IntrospectUser, IntrospectPassword string

	srv *http.Server

	mu       sync.Mutex
	codes    map[string]codeGrant
	refresh  map[string]string // refresh token → user (live ones)
	access   map[string]access
	devices  map[string]*device
	revoked  map[string]bool // users
	counts   map[string]int
	polls    []time.Time
	secrets  []string // every code, token and verifier seen, for secret scans
	failNext string   // an error code the next token request answers
	lieNext  string   // a 200 answer the next token request gets instead
}

type codeGrant struct {
	challenge, redirect, user string
}

type access struct {
	user    string
	expires time.Time
}

type device struct {
	polls int // the token requests so far; approved after DevicePending (and a slow_down)
}

// Start serves on 127.0.0.1 with cert until the test ends.
func Start(cert tls.Certificate, clientID, clientSecret, user string) (*Server, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL: "https://" + ln.Addr().String(), ClientID: clientID, ClientSecret: clientSecret, User: user,
		codes: map[string]codeGrant{}, refresh: map[string]string{}, access: map[string]access{},
		devices: map[string]*device{}, revoked: map[string]bool{}, counts: map[string]int{},
	}
	if clientSecret != "" {
		s.note(clientSecret) // a confidential client's secret is scanned for too
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /device", s.device)
	mux.HandleFunc("POST /introspect", s.introspect)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Addr is the server's host:port.
func (s *Server) Addr() string { u, _ := url.Parse(s.URL); return u.Host }

// Revoke retires every grant and access token of user: refreshes answer
// invalid_grant, introspection inactive.
func (s *Server) Revoke(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[user] = true
	for k, u := range s.refresh {
		if u == user {
			delete(s.refresh, k)
		}
	}
	for k, a := range s.access {
		if a.user == user {
			delete(s.access, k)
		}
	}
}

// IssueRefresh issues a refresh token for user, as an authorization
// would, for tests that need a stored grant without running a flow.
func (s *Server) IssueRefresh(user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := random()
	s.refresh[rt] = user
	s.note(rt)
	return rt
}

// ExpireAccess ends every access token of user before its time; the
// grant (refresh token) stays good.
func (s *Server) ExpireAccess(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, a := range s.access {
		if a.user == user {
			delete(s.access, k)
		}
	}
}

// FailNext makes the next token request answer the OAuth2 error code.
func (s *Server) FailNext(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = code
}

// LieNext makes the next token request get body, as JSON with status 200,
// whatever it asked: a provider that answers nonsense.
func (s *Server) LieNext(body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lieNext = body
}

// Count returns how many requests of a kind were served: "authorize",
// "code", "refresh", "device", "poll", "introspect".
func (s *Server) Count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[kind]
}

// Polls returns when the device flow's token requests came.
func (s *Server) Polls() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.polls...)
}

// Secrets returns every code, verifier and token the server issued or
// received, for tests that prove none reaches a log.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.secrets...)
}

// Valid reports the user of a live access token.
func (s *Server) Valid(token string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[token]
	if !ok || time.Now().After(a.expires) {
		return "", false
	}
	return a.user, true
}

func random() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) note(secret string) { s.secrets = append(s.secrets, secret) }

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts["authorize"]++
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme != "http" || redirect.Hostname() != "127.0.0.1" {
		http.Error(w, "redirect_uri must be a loopback http URL", http.StatusBadRequest)
		return
	}
	if q.Get("client_id") != s.ClientID || q.Get("response_type") != "code" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "want response_type=code, the client, and an S256 code_challenge", http.StatusBadRequest)
		return
	}
	code := random()
	s.note(code)
	s.codes[code] = codeGrant{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), user: s.User}
	v := redirect.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// clientOK checks the client's authentication, in the body or basic.
func (s *Server) clientOK(r *http.Request) bool {
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id == s.ClientID && subtle.ConstantTimeCompare([]byte(secret), []byte(s.ClientSecret)) == 1
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code})
}

// issue answers a token request with a new access token, and a refresh
// token (rt, or a new one when rt is "").
func (s *Server) issue(w http.ResponseWriter, user, rt string) {
	life := s.AccessLifetime
	if life <= 0 {
		life = time.Hour
	}
	at := random()
	s.access[at] = access{user: user, expires: time.Now().Add(life)}
	s.note(at)
	if rt == "" {
		rt = random()
		s.refresh[rt] = user
		s.note(rt)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": at, "token_type": "Bearer", "expires_in": int(life.Seconds()), "refresh_token": rt,
	})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clientOK(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if s.lieNext != "" {
		body := s.lieNext
		s.lieNext = ""
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
		return
	}
	if s.failNext != "" {
		code := s.failNext
		s.failNext = ""
		oauthError(w, http.StatusBadRequest, code)
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "authorization_code":
		s.counts["code"]++
		code, verifier := f.Get("code"), f.Get("code_verifier")
		s.note(verifier)
		g, ok := s.codes[code]
		delete(s.codes, code) // one use (RFC 6749 §4.1.2)
		sum := sha256.Sum256([]byte(verifier))
		if !ok || g.redirect != f.Get("redirect_uri") || base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		s.issue(w, g.user, "")
	case "refresh_token":
		s.counts["refresh"]++
		rt := f.Get("refresh_token")
		user, ok := s.refresh[rt]
		if !ok || s.revoked[user] {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		if s.Rotate {
			delete(s.refresh, rt)
			rt = ""
		}
		s.issue(w, user, rt)
	case "urn:ietf:params:oauth:grant-type:device_code":
		s.counts["poll"]++
		s.polls = append(s.polls, time.Now())
		dc := f.Get("device_code")
		d, ok := s.devices[dc]
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		d.polls++
		switch {
		case d.polls <= s.DevicePending:
			oauthError(w, http.StatusBadRequest, "authorization_pending")
			return
		case s.SlowDown && d.polls == s.DevicePending+1:
			oauthError(w, http.StatusBadRequest, "slow_down")
			return
		}
		delete(s.devices, dc)
		s.issue(w, s.User, "")
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts["device"]++
	// The device authorization request names the client only (as Google's
	// and Microsoft's do, and golang.org/x/oauth2 sends); a confidential
	// client proves its secret at the token endpoint.
	if r.PostForm.Get("client_id") != s.ClientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	dc := random()
	s.note(dc)
	s.devices[dc] = &device{}
	interval := s.DeviceInterval
	if interval <= 0 {
		interval = 1
	}
	answer := map[string]any{
		"device_code": dc, "user_code": "WDJB-MJHT", "verification_uri": s.URL + "/device",
		"expires_in": 600, "interval": interval,
	}
	for k, v := range s.DeviceFields {
		answer[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer)
}

// introspect is RFC 7662 as Dovecot's oauth2 passdb asks for it
// (introspection_mode = post): the token in the body, the answer's
// "active" and "username".
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if s.IntrospectUser != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != s.IntrospectUser || p != s.IntrospectPassword {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.counts["introspect"]++
	s.mu.Unlock()
	user, ok := s.Valid(r.PostForm.Get("token"))
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		fmt.Fprint(w, `{"active":false}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"active": true, "username": user})
}
