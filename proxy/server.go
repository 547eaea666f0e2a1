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

	mu        sync.Mutex
	listeners map[string]*Listener // by address
	wg        sync.WaitGroup
	errc      chan error
}

func (s *Server) settings(c Setup, l ListenSpec) (*Settings, error) {
	front, ok := s.Fronts[l.Proto]
	if !ok {
		return nil, fmt.Errorf("listener %s: no %s front", l.Address, l.Proto)
	}
	st := &Settings{Front: front, Listen: l, Providers: c.Providers, Limits: c.Limits}
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
				l.Shutdown(ctx)
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

// Reload applies a new configuration: listeners on the same address get
// the new settings for their next sessions (running sessions keep theirs),
// new addresses start, and addresses no longer configured stop accepting
// and let their sessions finish. A listener whose protocol changed is
// restarted.
func (s *Server) Reload(ctx context.Context, c Setup) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Prepare everything first, so that a failure changes nothing.
	type update struct {
		l  *Listener
		st *Settings
	}
	var updates []update
	var fresh []*Listener
	keep := map[string]bool{}
	fail := func(err error) error {
		for _, l := range fresh {
			l.Shutdown(ctx)
		}
		return err
	}
	for _, lc := range c.Listeners {
		if old, ok := s.listeners[lc.Address]; ok && old.Settings().Listen.Proto == lc.Proto {
			st, err := s.settings(c, lc)
			if err != nil {
				return fail(err)
			}
			updates = append(updates, update{old, st})
			keep[lc.Address] = true
			continue
		}
		if old, ok := s.listeners[lc.Address]; ok {
			// Same address, other protocol: free the address first.
			old.Shutdown(ctx)
			delete(s.listeners, lc.Address)
		}
		l, err := s.newListener(ctx, c, lc)
		if err != nil {
			return fail(err)
		}
		fresh = append(fresh, l)
		keep[lc.Address] = true
	}
	for _, u := range updates {
		u.l.Update(u.st)
	}
	for addr, l := range s.listeners {
		if !keep[addr] {
			go l.Shutdown(context.WithoutCancel(ctx))
			delete(s.listeners, addr)
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
	ls := make([]*Listener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
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
