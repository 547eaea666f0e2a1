package pop3server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Backend holds the users and their maildrops. Required.
	Backend Backend
	// TLSConfig enables STLS (RFC 2595 §4) on connections that are not
	// under TLS yet. Nil: STLS is not offered. A listener of implicit TLS
	// (port 995) needs no TLSConfig here.
	TLSConfig *tls.Config
	// AllowInsecureAuth accepts USER, PASS and AUTH on a connection that
	// is not under TLS. False (the default): they are refused with
	// -ERR [AUTH] until STLS, as providers do.
	AllowInsecureAuth bool
	// Without names capabilities the server must not offer, and whose
	// commands it then refuses: any of "TOP", "UIDL", "USER", "SASL",
	// "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING" (RFC 2449 §6). Empty:
	// all are offered.
	Without []string
	// Greeting is the text after "+OK " in the greeting. Empty means
	// "POP3 server ready". A test may put an APOP timestamp here (the
	// server has no APOP command).
	Greeting string
	// IdleTimeout ends a session after this long without a command. Zero
	// means 10 minutes, the minimum autologout timer of RFC 1939 §3.
	IdleTimeout time.Duration
	// ErrorLog receives connection errors (never credentials or message
	// content). Nil: they are discarded.
	ErrorLog *log.Logger
}

// Capability names (RFC 2449 §6, RFC 3206 §6).
const (
	capTop          = "TOP"
	capUIDL         = "UIDL"
	capUser         = "USER"
	capSASL         = "SASL"
	capRespCodes    = "RESP-CODES"
	capAuthRespCode = "AUTH-RESP-CODE"
	capPipelining   = "PIPELINING"
)

var knownCaps = []string{capTop, capUIDL, capUser, capSASL, capRespCodes, capAuthRespCode, capPipelining}

// Server serves POP3 sessions.
type Server struct {
	opts Options
	caps map[string]bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// New returns a server. It fails for a missing Backend or an unknown name
// in Options.Without.
func New(opts Options) (*Server, error) {
	if opts.Backend == nil {
		return nil, errors.New("pop3server: Options.Backend is required")
	}
	caps := map[string]bool{}
	for _, c := range knownCaps {
		caps[c] = true
	}
	for _, w := range opts.Without {
		w = strings.ToUpper(w)
		if _, ok := caps[w]; !ok {
			return nil, fmt.Errorf("pop3server: unknown capability %q in Options.Without", w)
		}
		caps[w] = false
	}
	if opts.Greeting == "" {
		opts.Greeting = "POP3 server ready"
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	return &Server{opts: opts, caps: caps, listeners: map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections on ln until Close and serves each in its own
// goroutine. It returns nil after Close. Hand it a tls.Listener for
// implicit TLS.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait and retry.
			s.logf("accept: %v", err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

// ServeConn serves one connection and returns when its session ends.
func (s *Server) ServeConn(c net.Conn) {
	if !s.track(c) {
		c.Close()
		return
	}
	defer s.wg.Done()
	s.serveConn(c)
}

// track registers a connection, unless the server is closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) serveConn(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	defer func() {
		// One broken session must not stop the others.
		if r := recover(); r != nil {
			s.logf("panic in a session: %v\n%s", r, debug.Stack())
			c.Close()
		}
	}()
	newConn(s, c).serve()
}

// Close stops every listener, ends every session (without committing
// deletions: only QUIT does that) and waits for them to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.ErrorLog != nil {
		s.opts.ErrorLog.Printf(format, args...)
	}
}
