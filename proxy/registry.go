package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"mailproxy/policy"
)

// The registry: what a Server's listeners and sessions are doing now, for
// the status page. It is read from the structures the listeners keep
// anyway (their session sets, under the listener's lock) and from the
// sessions' byte counters (atomics the relay adds to): nothing is added
// to the data path.

// ListenerInfo describes a listener.
type ListenerInfo struct {
	Address  string // as bound
	Proto    policy.Proto
	Provider string // a provider's name, or "*"
	Upstream string
	Active   int  // sessions running
	Retired  bool // removed by a reload; its sessions finish
}

// SessionInfo describes a running session. It holds no credential and no
// message content: the user name is the login name the app gave, escaped
// as in the audit log.
type SessionInfo struct {
	ID       string
	Proto    policy.Proto
	Listener string
	Client   netip.AddrPort
	// Provider is the provider the session's login was routed to, else
	// the listener's ("*" before a routing listener's first login).
	Provider string
	User     string // empty before the first login attempt
	LoggedIn bool
	Since    time.Time
	// BytesUp went from the app towards the provider, BytesDown the other
	// way, so far (as session.end will say).
	BytesUp, BytesDown int64
}

// Info describes the session now.
func (s *Session) Info() SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := SessionInfo{ID: s.ID, Proto: s.Proto, Listener: s.Settings.Listen.Address, Client: s.Remote,
		Provider: s.Settings.Listen.ProviderName(), User: s.user, LoggedIn: s.loggedIn, Since: s.start,
		BytesUp: s.bytesUp.Load(), BytesDown: s.bytesDown.Load()}
	if s.routedTo != "" {
		info.Provider = s.routedTo
	}
	return info
}

// Info describes the listener.
func (l *Listener) Info() ListenerInfo {
	st := l.Settings()
	addr := st.Listen.Address
	if l.ln != nil {
		addr = l.ln.Addr().String()
	}
	return ListenerInfo{Address: addr, Proto: st.Listen.Proto, Provider: st.Listen.ProviderName(),
		Upstream: st.Listen.Upstream(), Active: l.Active()}
}

// Sessions describes the listener's running sessions, oldest first.
func (l *Listener) Sessions() []SessionInfo {
	l.mu.Lock()
	ss := make([]*Session, 0, len(l.sessions))
	for s := range l.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	out := make([]SessionInfo, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.Info())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Snapshot describes the server's listeners (by address) and their
// running sessions (oldest first), those of listeners a reload removed
// included.
func (s *Server) Snapshot() ([]ListenerInfo, []SessionInfo) {
	s.mu.Lock()
	ls := make([]*Listener, 0, len(s.listeners)+len(s.retired))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	retired := len(ls)
	ls = append(ls, s.retired...)
	s.mu.Unlock()
	var infos []ListenerInfo
	var sessions []SessionInfo
	for i, l := range ls {
		info := l.Info()
		info.Retired = i >= retired
		if info.Retired && info.Active == 0 {
			continue
		}
		infos = append(infos, info)
		sessions = append(sessions, l.Sessions()...)
	}
	slices.SortFunc(infos, func(a, b ListenerInfo) int { return strings.Compare(a.Address, b.Address) })
	slices.SortFunc(sessions, func(a, b SessionInfo) int { return a.Since.Compare(b.Since) })
	return infos, sessions
}
