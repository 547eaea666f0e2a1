package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// Front is a protocol's side of a session: the pre-authentication dialogue
// with the app, the login at the provider, and then the relay.
type Front interface {
	// Serve runs one session until it ends. A nil error means an orderly
	// end (the app logged out or closed the connection).
	Serve(ctx context.Context, s *Session) error
	// Refuse writes the protocol's one-line refusal to an app that is
	// turned away before its session starts (remote client, session
	// limit), e.g. "* BYE ..." or "421 ...".
	Refuse(w io.Writer, reason policy.Reason, text string)
}

// Listener accepts apps on one address and hands each to its Front.
type Listener struct {
	Audit  *policy.Audit
	Dialer *tlsconf.Dialer

	settings atomic.Pointer[Settings]
	ln       net.Listener

	admission admission

	mu       sync.Mutex
	sessions map[*Session]struct{}
	wg       sync.WaitGroup
	active   atomic.Int64
	// accepted counts connections accepted and not yet done with, admitted
	// or not (active counts sessions, from admission on).
	accepted atomic.Int64
	closing  atomic.Bool
}

// NewListener returns a listener with its first settings.
func NewListener(front Front, audit *policy.Audit, dialer *tlsconf.Dialer, s *Settings) *Listener {
	l := &Listener{Audit: audit, Dialer: dialer, sessions: map[*Session]struct{}{}}
	st := s.normalized()
	if front != nil {
		st.Front = front
	}
	l.settings.Store(st)
	return l
}

// Settings returns the settings new sessions get.
func (l *Listener) Settings() *Settings { return l.settings.Load() }

// Update replaces the settings for sessions that start from now on.
// A nil Front keeps the current one.
func (l *Listener) Update(s *Settings) {
	st := s.normalized()
	if st.Front == nil {
		st.Front = l.Settings().Front
	}
	l.settings.Store(st)
}

// Addr is the address the listener is bound to, once Listen has returned.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Listen binds the listener's address with TCP keepalive on accepted
// connections. Serve records listener.start: a listener bound by a reload
// that is then refused never served.
func (l *Listener) Listen(ctx context.Context) error {
	s := l.Settings()
	lc := net.ListenConfig{KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(ctx, "tcp", s.Listen.Address)
	if err != nil {
		return fmt.Errorf("listening for %s on %s: %w", s.Listen.Proto, s.Listen.Address, err)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && s.Listen.Access.Loopback && !a.IP.IsLoopback() {
		// A hand-built value that calls a LAN address loopback would let
		// passwords cross the network in plaintext.
		ln.Close()
		return fmt.Errorf("listener %s: access says loopback, but the address is not", s.Listen.Address)
	}
	l.ln = ln
	return nil
}

// announce records listener.start for the settings now in force.
func (l *Listener) announce() {
	s := l.Settings()
	l.Audit.ListenerStart(l.ln.Addr().String(), s.Listen.Proto, s.Listen.ProviderName(), s.Listen.Upstream())
}

// Close releases the address of a listener that never served.
func (l *Listener) Close() error {
	l.closing.Store(true)
	if l.ln == nil {
		return nil
	}
	return l.ln.Close()
}

// keepAlive probes idle connections so that a vanished peer is noticed
// within about two minutes, whatever the idle limit.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4}

// Serve accepts connections until the listener is closed. It returns nil
// after Shutdown or Close.
func (l *Listener) Serve(ctx context.Context) error {
	l.announce()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.closing.Load() {
				return nil
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.wg.Add(1)
		l.accepted.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.accepted.Add(-1)
			l.handle(ctx, c)
		}()
	}
}

// Shutdown stops accepting, waits for running sessions to end until ctx is
// done, then closes those still running.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.closing.Store(true)
	if l.ln != nil {
		l.ln.Close()
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	for s := range l.sessions {
		s.close()
	}
	l.mu.Unlock()
	<-done
	return ctx.Err()
}

// Active is the number of sessions running.
func (l *Listener) Active() int { return int(l.active.Load()) }

// busy reports whether any connection the listener accepted is still
// being handled, a session or not yet one.
func (l *Listener) busy() bool { return l.accepted.Load() > 0 }

// newID names a session in the audit log: 64 random bits, so that two
// sessions alive at once never share a name (32 bits met the birthday
// bound within months of a busy office).
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (l *Listener) handle(ctx context.Context, c net.Conn) {
	st := l.Settings()
	proto := st.Listen.Proto
	remote, _ := netip.ParseAddrPort(c.RemoteAddr().String())

	// Refusals before a session starts are aggregated per client and kind
	// (policy.Audit.Refused), so that a flood cannot fill the disk.
	if !st.Listen.Access.Admits(remote.Addr()) {
		l.Audit.Refused(st.Listen.Address, proto, remote.Addr(), policy.Deny(policy.ReasonRemoteClient, remote.Addr().Unmap().String(),
			"client %v is not in allow_clients of listener %s", remote.Addr().Unmap(), st.Listen.Address))
		l.refuse(c, st.Front, policy.ReasonRemoteClient, "mailproxy does not serve this address")
		return
	}
	id := newID()
	audit := l.Audit.Session(id, proto)
	s := &Session{ID: id, Proto: proto, Settings: st, Audit: audit, Dialer: l.Dialer, Remote: remote, start: time.Now()}
	// Complete before admit: from then on another accept may close s to
	// make room.
	s.Client = countingConn{Conn: c, read: &s.bytesUp, written: &s.bytesDown}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.cancel = cancel
	evict, refusal := l.admission.admit(s, st.Listen, st.Limits)
	if refusal != "" {
		l.Audit.Refused(st.Listen.Address, proto, remote.Addr(), policy.Deny(policy.ReasonLimit, "", "%s", refusal))
		l.refuse(c, st.Front, policy.ReasonLimit, "too many connections, try again later")
		return
	}
	if evict != nil {
		evict.Deny(policy.ReasonLimit, "", "closed before login to make room for client %v: listener %s is full and client %v held the most sessions before login",
			clientKey(remote.Addr()), st.Listen.Address, clientKey(evict.Remote.Addr()))
		evict.close()
	}
	s.onLogin = func() { l.admission.loggedIn(s) }
	l.active.Add(1)
	// The slot is given back before session.end is written (and on every
	// way out): whoever reads the end in the log finds the slot free.
	var leaveOnce sync.Once
	leave := func() {
		leaveOnce.Do(func() {
			l.admission.done(s)
			l.active.Add(-1)
		})
	}
	defer leave()

	l.mu.Lock()
	l.sessions[s] = struct{}{}
	l.mu.Unlock()

	audit.Start(remote.String(), st.Listen.ProviderName())
	err := l.serve(ctx, s)
	s.finish()
	cancel()
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
	if err == nil {
		// A session that never logged in ends saying why, when a login
		// failed for a reason no other event records.
		err = s.unexplained()
	}
	leave()
	audit.End(policy.SessionStats{
		BytesUp: s.bytesUp.Load(), BytesDown: s.bytesDown.Load(),
		Duration: time.Since(s.start), Mail: s.mail, Err: err,
	})
}

// serve runs the front, turning a panic into the end of this session only:
// one broken session must not stop the others. The app gets the protocol's
// goodbye, and the audit log one session.panic event (never raw text:
// stderr may be the audit stream).
func (l *Listener) serve(ctx context.Context, s *Session) (err error) {
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			if p, ok := r.(*panicked); ok {
				r, stack = p.value, p.stack
			}
			s.Audit.Panic(r, stack)
			s.Client.SetWriteDeadline(time.Now().Add(5 * time.Second))
			s.Settings.Front.Refuse(s.Client, policy.ReasonLimit, "mailproxy had an internal error and closed this session")
			err = fmt.Errorf("internal error (please report): %v", r)
		}
	}()
	return s.Settings.Front.Serve(ctx, s)
}

func (l *Listener) refuse(c net.Conn, front Front, reason policy.Reason, text string) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	front.Refuse(c, reason, text)
	c.Close()
}
