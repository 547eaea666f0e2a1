package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"

	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// Setup is everything a Server serves: the listeners, the providers a
// "*" listener chooses among, and the limits. cmd/mailproxy builds it from
// the configuration file; tests build it by hand.
type Setup struct {
	Providers []*policy.Provider
	Limits    Limits // zero fields mean the defaults
	Listeners []ListenSpec
}

// Server runs the listeners of a Setup.
type Server struct {
	Audit  *policy.Audit
	Dialer *tlsconf.Dialer
	// Fronts serve each protocol.
	Fronts map[policy.Proto]Front
	// LocalTLS returns the app-side TLS configuration of a listener whose
	// local_security is not "none". Nil means local TLS is unavailable.
	LocalTLS func(ListenSpec) (*tls.Config, error)
	// Grants gives access tokens for OAuth2 providers' logins.
	Grants Grants

	mu        sync.Mutex
	listeners map[string]*Listener // by address
	retired   []*Listener          // removed by a reload; their sessions may run on
	wg        sync.WaitGroup
	errc      chan error
}

func (s *Server) settings(c Setup, l ListenSpec) (*Settings, error) {
	front, ok := s.Fronts[l.Proto]
	if !ok {
		return nil, fmt.Errorf("listener %s: no %s front", l.Address, l.Proto)
	}
	st := &Settings{Front: front, Listen: l, Providers: c.Providers, Limits: c.Limits, Grants: s.Grants}
	if l.LocalSecurity != "" && l.LocalSecurity != LocalNone {
		if s.LocalTLS == nil {
			return nil, fmt.Errorf("listener %s: local_security %q is not available", l.Address, l.LocalSecurity)
		}
		tc, err := s.LocalTLS(l)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Address, err)
		}
		st.LocalTLS = tc
	}
	return st, nil
}

// Start binds every listener of c and serves them in the background. If
// any cannot start, none is left running.
func (s *Server) Start(ctx context.Context, c Setup) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = map[string]*Listener{}
	s.errc = make(chan error, len(c.Listeners)+8)
	var started []*Listener
	for _, lc := range c.Listeners {
		l, err := s.newListener(ctx, c, lc)
		if err != nil {
			for _, l := range started {
				l.Close()
			}
			return err
		}
		started = append(started, l)
	}
	for _, l := range started {
		s.serve(ctx, l)
	}
	return nil
}

func (s *Server) newListener(ctx context.Context, c Setup, lc ListenSpec) (*Listener, error) {
	st, err := s.settings(c, lc)
	if err != nil {
		return nil, err
	}
	l := NewListener(nil, s.Audit, s.Dialer, st)
	if err := l.Listen(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func (s *Server) serve(ctx context.Context, l *Listener) {
	s.listeners[l.Settings().Listen.Address] = l
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := l.Serve(ctx); err != nil {
			s.errc <- err
		}
	}()
}

// Listeners returns the running listeners.
func (s *Server) Listeners() []*Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Listener
	for _, l := range s.listeners {
		out = append(out, l)
	}
	return out
}

// Reload applies a new Setup atomically: everything is prepared first —
// settings, local TLS, every new address bound — and only then swapped in;
// if any step fails nothing changes (no listener stops, no address is
// released) and the error says why. Then listeners on an address that
// stays get the new settings for their next sessions, on the same socket,
// even when the protocol changed; running sessions keep the values they
// started with. New addresses start serving; addresses no longer
// configured stop accepting at once and their sessions finish on the old
// values (Shutdown cuts them at its deadline). Reload never waits for a
// session.
func (s *Server) Reload(ctx context.Context, c Setup) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	type update struct {
		l  *Listener
		st *Settings
	}
	var updates []update
	var fresh []*Listener
	keep := map[string]bool{}
	live := s.retired[:0]
	for _, l := range s.retired {
		// Kept while any connection it accepted is handled (one not yet
		// admitted counts too): Shutdown must cut or wait for it.
		if l.busy() {
			live = append(live, l)
		}
	}
	s.retired = live
	fail := func(err error) error {
		for _, l := range fresh {
			l.Close()
		}
		return err
	}
	for _, lc := range c.Listeners {
		if keep[lc.Address] {
			return fail(fmt.Errorf("listener %s is configured twice", lc.Address))
		}
		keep[lc.Address] = true
		if old, ok := s.listeners[lc.Address]; ok {
			st, err := s.settings(c, lc)
			if err != nil {
				return fail(err)
			}
			updates = append(updates, update{old, st})
			continue
		}
		l, err := s.newListener(ctx, c, lc)
		if err != nil {
			return fail(err)
		}
		fresh = append(fresh, l)
	}
	// Nothing can fail from here on.
	for _, u := range updates {
		before := u.l.Settings()
		u.l.Update(u.st)
		if before.Listen.Proto != u.st.Listen.Proto || before.Listen.Upstream() != u.st.Listen.Upstream() {
			u.l.announce()
		}
	}
	for addr, l := range s.listeners {
		if !keep[addr] {
			delete(s.listeners, addr)
			s.retired = append(s.retired, l)
			l.Close() // stop accepting now; the sessions go on
		}
	}
	for _, l := range fresh {
		s.serve(ctx, l)
	}
	return nil
}

// Shutdown stops every listener, lets sessions finish until ctx is done,
// then closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ls := make([]*Listener, 0, len(s.listeners)+len(s.retired))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	ls = append(ls, s.retired...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ls))
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Shutdown(ctx)
		}()
	}
	wg.Wait()
	s.wg.Wait()
	return errors.Join(errs...)
}

// Err returns a channel that receives a listener's fatal error.
func (s *Server) Err() <-chan error { return s.errc }
