package status

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// Proto is the `proto` of the status page's refusals in the audit log.
const Proto policy.Proto = "http"

// HTTP limits: a status page needs small, quick requests only.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	// maxConns bounds the connections served at once, so that a local
	// program opening socket after socket holds at most this many
	// goroutines and buffers; the rest wait in the kernel's backlog.
	maxConns       = 32
	maxHeaderBytes = 16 << 10
)

// Server serves the status page (/) and the metrics (/metrics) on one
// address. It answers GET and HEAD only; only to clients its Access admits
// (loopback by default); and only to requests whose Host is an IP address
// or "localhost" with its port, so that a web page elsewhere cannot reach
// it through a DNS name that resolves to this machine (DNS rebinding).
// Every refusal is audited, aggregated like a listener's.
type Server struct {
	Collector *Collector
	// Snapshot describes the running listeners and sessions (the proxy
	// server's registry).
	Snapshot func() ([]proxy.ListenerInfo, []proxy.SessionInfo)
	// Audit records the page's refusals (required).
	Audit *policy.Audit

	mu  sync.Mutex
	cur *binding
}

// binding is the status page on one address.
type binding struct {
	s      *Server
	ln     net.Listener
	srv    *http.Server
	port   string
	mu     sync.Mutex
	access policy.Access
	done   chan struct{}
}

// Addr is the address the status page is bound to, "" when there is none.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return ""
	}
	return s.cur.ln.Addr().String()
}

// Start serves the status page on address (nothing when it is "").
func (s *Server) Start(address string, access policy.Access) error {
	p, err := s.Prepare(address, access)
	if err != nil {
		return err
	}
	p.Commit()
	return nil
}

// Pending is a change of the status page's address or access, prepared
// but not yet in force.
type Pending struct {
	s      *Server
	next   *binding // a new address, bound; nil: keep or close the current
	keep   bool     // the address stays: only the access changes
	access policy.Access
}

// Prepare readies the status page for a new configuration without
// touching the one in force: a new address is bound now, so that a reload
// can fail before anything changed. address "" means no status page.
func (s *Server) Prepare(address string, access policy.Access) (*Pending, error) {
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	p := &Pending{s: s, access: access}
	if address == "" {
		return p, nil
	}
	if cur != nil && sameAddress(address, cur.ln.Addr().String()) {
		p.keep = true
		return p, nil
	}
	b, err := s.bind(address, access)
	if err != nil {
		return nil, err
	}
	p.next = b
	return p, nil
}

// sameAddress reports whether the configured address is the one bound:
// the same IP and port, where a wildcard (0.0.0.0:P is bound on Linux as
// a dual-stack [::]:P) matches a wildcard; a port 0 asks for a new one.
func sameAddress(configured, bound string) bool {
	c, err1 := netip.ParseAddrPort(configured)
	b, err2 := netip.ParseAddrPort(bound)
	if err1 != nil || err2 != nil || c.Port() == 0 || c.Port() != b.Port() {
		return false
	}
	return c.Addr().Unmap() == b.Addr().Unmap() || c.Addr().IsUnspecified() && b.Addr().IsUnspecified()
}

// Commit puts the change in force: the old address, if it changed, stops
// at once (requests in flight may finish).
func (p *Pending) Commit() {
	s := p.s
	s.mu.Lock()
	old := s.cur
	switch {
	case p.keep:
		if old != nil {
			old.mu.Lock()
			old.access = p.access
			old.mu.Unlock()
		}
		s.mu.Unlock()
		return
	case p.next != nil:
		s.cur = p.next
		go p.next.serve()
	default:
		s.cur = nil
	}
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// Abort releases what Prepare bound.
func (p *Pending) Abort() {
	if p.next != nil {
		p.next.ln.Close()
	}
}

// Close stops the status page.
func (s *Server) Close() {
	s.mu.Lock()
	b := s.cur
	s.cur = nil
	s.mu.Unlock()
	if b != nil {
		b.close()
	}
}

func (s *Server) bind(address string, access policy.Access) (*binding, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("status page on %s: %w", address, err)
	}
	a, _ := ln.Addr().(*net.TCPAddr)
	if access.Loopback && (a == nil || !a.IP.IsLoopback()) {
		ln.Close()
		return nil, fmt.Errorf("status page on %s: access says loopback, but the address is not", address)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	b := &binding{s: s, ln: ln, port: port, access: access, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", b.page)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Collector.Registry, promhttp.HandlerOpts{}))
	b.srv = &http.Server{
		Handler:           b.guard(mux),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// stderr may be the audit stream: net/http's own complaints
		// (bad TLS attempts, broken requests) must not go there.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return b, nil
}

func (b *binding) serve() {
	defer close(b.done)
	// Clients the page does not admit are turned away at accept, before
	// they can hold one of the maxConns slots.
	if err := b.srv.Serve(netutil.LimitListener(admitting{b}, maxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		// The listener failed (not closed by us): nothing to serve on.
		// Forget it, so that the next reload binds the address anew
		// rather than keeping a dead binding.
		b.ln.Close()
		b.s.mu.Lock()
		if b.s.cur == b {
			b.s.cur = nil
		}
		b.s.mu.Unlock()
	}
}

// admitting is the page's listener, closing at once (audited, aggregated
// like a listener's refusals) every connection from a client the page's
// access does not admit.
type admitting struct{ b *binding }

func (a admitting) Accept() (net.Conn, error) {
	for {
		c, err := a.b.ln.Accept()
		if err != nil {
			return nil, err
		}
		remote, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		client := remote.Addr().Unmap()
		a.b.mu.Lock()
		access := a.b.access
		a.b.mu.Unlock()
		if access.Admits(client) {
			return c, nil
		}
		// On record before the client sees the connection end.
		listener := a.b.ln.Addr().String()
		a.b.s.Audit.Refused(listener, Proto, client, policy.Deny(policy.ReasonRemoteClient, client.String(),
			"client %v is not in allow_clients of the status page %s", client, listener))
		c.Close()
	}
}

func (a admitting) Close() error   { return a.b.ln.Close() }
func (a admitting) Addr() net.Addr { return a.b.ln.Addr() }

func (b *binding) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if b.srv.Shutdown(ctx) != nil {
		b.srv.Close()
	}
}

// guard refuses what the status page must not answer, and sets headers
// that keep the page to itself: no scripts, no frames, no referrer.
func (b *binding) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote, _ := netip.ParseAddrPort(r.RemoteAddr)
		client := remote.Addr().Unmap()
		b.mu.Lock()
		access := b.access
		b.mu.Unlock()
		listener := b.ln.Addr().String()
		refuse := func(code int, reason policy.Reason, host, format string, args ...any) {
			b.s.Audit.Refused(listener, Proto, client, policy.Deny(reason, host, format, args...))
			http.Error(w, http.StatusText(code), code)
		}
		if !access.Admits(client) {
			refuse(http.StatusForbidden, policy.ReasonRemoteClient, client.String(),
				"client %v is not in allow_clients of the status page %s", client, listener)
			return
		}
		if !b.hostAllowed(r.Host) {
			refuse(http.StatusMisdirectedRequest, policy.ReasonInput, "",
				"a request for Host %q: the status page answers only to an IP address or localhost with port %s (DNS rebinding)", r.Host, b.port)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			refuse(http.StatusMethodNotAllowed, policy.ReasonInput, "", "method %q: the status page answers GET and HEAD only", r.Method)
			return
		}
		if r.URL.Path == "/favicon.ico" { // browsers ask for it on their own
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.URL.Path != "/" && r.URL.Path != "/metrics" {
			path := r.URL.Path
			if len(path) > 100 {
				path = path[:100] + "..."
			}
			refuse(http.StatusNotFound, policy.ReasonInput, "", "no page %s: the status page has / and /metrics", policy.Escape(path))
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// hostAllowed accepts a Host header naming this port on an IP address or
// localhost: a name is what a rebinding attack needs, an IP literal is
// not one.
func (b *binding) hostAllowed(host string) bool {
	h, port, err := net.SplitHostPort(host)
	if err != nil || port != b.port {
		return false
	}
	if h == "localhost" {
		return true
	}
	_, err = netip.ParseAddr(h)
	return err == nil
}

func (b *binding) page(w http.ResponseWriter, r *http.Request) {
	var listeners []proxy.ListenerInfo
	var sessions []proxy.SessionInfo
	if b.s.Snapshot != nil {
		listeners, sessions = b.s.Snapshot()
	}
	p, err := b.s.Collector.page(listeners, sessions)
	if err != nil {
		http.Error(w, "gathering the metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := p.Render(&buf); err != nil {
		http.Error(w, "rendering the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}
