package proxy

import (
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Admission: which apps a listener serves when it is busy.
//
// Every listener bounds its sessions three ways at once:
//   - max_sessions in all;
//   - max_sessions_per_client from one client (an address; an IPv6
//     client by its /64, which one machine usually holds whole), loopback
//     addresses included, so that one local program cannot take every
//     slot;
//   - at most half of max_sessions before login, so that strangers that
//     never log in cannot take the slots of apps that do;
//   - sessions_per_minute_per_client new sessions from one client, with
//     that many at once, so that a program that connects and hangs up as
//     fast as it can does not write a full audit record per attempt (its
//     refusals are aggregated, policy.Audit.Refused);
//   - allClientsFactor times that from all clients together: a local
//     program can connect from any of the 2^24 loopback addresses, each
//     a client of its own, and the sum is what bounds the audit log's
//     growth (about 20 full session records a second at the defaults).
//
// When the listener is full (in all, or before login), a new app is not
// simply turned away: if another client holds more sessions before login
// than the newcomer holds in all, that client's oldest session before login
// is closed to make room (audited as a limit). Logged-in sessions are
// never closed to make room. So a client that floods the listener with idle
// connections can delay an app on another address by one connection at
// most, and an app on the flooding address still gets its share.

// admission is the bookkeeping of one listener's sessions.
type admission struct {
	mu       sync.Mutex
	total    int
	prelogin int
	clients  map[netip.Prefix]*clientSessions
	// rates hold each recent client's allowance of new sessions (a token
	// bucket: sessions_per_minute_per_client tokens, one back every
	// 60/that seconds). A full bucket is forgotten.
	rates map[netip.Prefix]*allowance
	all   *allowance       // every client's new sessions together
	now   func() time.Time // time.Now; tests set it
}

// allClientsFactor is how many clients' worth of new sessions a minute a
// listener starts in all.
const allClientsFactor = 10

// allowance is a client's token bucket of new sessions.
type allowance struct {
	tokens float64
	at     time.Time
}

// maxRates bounds the clients whose allowance is remembered; past it the
// rest share one (the zero Prefix), so that many addresses cannot grow
// the map without bound.
const maxRates = 4096

// spend takes one new session from key's allowance, or says it has none
// left; the lock is held.
func (a *admission) spend(key netip.Prefix, perMinute int) bool {
	now := time.Now()
	if a.now != nil {
		now = a.now()
	}
	if a.rates == nil {
		a.rates = map[netip.Prefix]*allowance{}
	}
	capacity, rate := float64(perMinute), float64(perMinute)/60
	refill := func(b *allowance) {
		b.tokens = min(capacity, b.tokens+now.Sub(b.at).Seconds()*rate)
		b.at = now
	}
	// All clients' allowance first, so that a client refused by it keeps
	// its own.
	all := allClientsFactor * float64(perMinute)
	if a.all == nil {
		a.all = &allowance{tokens: all, at: now}
	}
	a.all.tokens = min(all, a.all.tokens+now.Sub(a.all.at).Seconds()*all/60)
	a.all.at = now
	if a.all.tokens < 1 {
		return false
	}
	b := a.rates[key]
	if b == nil {
		if len(a.rates) >= maxRates {
			for k, old := range a.rates {
				if refill(old); old.tokens >= capacity {
					delete(a.rates, k)
				}
			}
		}
		if len(a.rates) >= maxRates {
			key = netip.Prefix{}
			b = a.rates[key]
		}
		if b == nil {
			b = &allowance{tokens: capacity, at: now}
			a.rates[key] = b
		}
	}
	refill(b)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	a.all.tokens--
	return true
}

// clientSessions are one client's sessions.
type clientSessions struct {
	sessions int
	waiting  []*Session // before login, oldest first
}

// clientKey is how sessions are counted per client: an IPv4 address
// alone, an IPv6 address by its /64.
func clientKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is6() && !ip.IsLoopback() {
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}

// admit decides whether s may start. When it may only by closing another
// client's session before login, evict is that session: the caller closes
// it (outside the lock). refusal says why s may not start.
func (a *admission) admit(s *Session, l ListenSpec, lim Limits) (evict *Session, refusal string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients == nil {
		a.clients = map[netip.Prefix]*clientSessions{}
	}
	key := clientKey(s.Remote.Addr())
	mine := a.clients[key]
	if mine == nil {
		mine = &clientSessions{}
	}
	perClient := min(lim.MaxSessionsPerClient, l.MaxSessions)
	if mine.sessions >= perClient {
		return nil, fmt.Sprintf("client %v already has %d sessions on listener %s (max_sessions_per_client)", key, mine.sessions, l.Address)
	}
	if !a.spend(key, lim.SessionsPerMinutePerClient) {
		if a.all.tokens < 1 {
			return nil, fmt.Sprintf("listener %s started more than %d sessions a minute from all clients together (%d × sessions_per_minute_per_client)", l.Address, allClientsFactor*lim.SessionsPerMinutePerClient, allClientsFactor)
		}
		return nil, fmt.Sprintf("client %v started more than %d sessions a minute on listener %s (sessions_per_minute_per_client)", key, lim.SessionsPerMinutePerClient, l.Address)
	}
	maxPrelogin := max(1, l.MaxSessions/2)
	if a.total >= l.MaxSessions || a.prelogin >= maxPrelogin {
		var victim *clientSessions
		for k, c := range a.clients {
			if k != key && evictable(c) != nil && (victim == nil || len(c.waiting) > len(victim.waiting)) {
				victim = c
			}
		}
		if victim == nil || len(victim.waiting) <= mine.sessions {
			return nil, fmt.Sprintf("listener %s is full: %d sessions, %d of them before login (max_sessions %d, half of them before login)",
				l.Address, a.total, a.prelogin, l.MaxSessions)
		}
		evict = evictable(victim)
		a.leave(evict)
	}
	a.clients[key] = mine
	a.total++
	a.prelogin++
	mine.sessions++
	mine.waiting = append(mine.waiting, s)
	s.admitted = true
	return evict, ""
}

// evictable is c's oldest session before login that is not logging in
// at the provider, nil if none.
func evictable(c *clientSessions) *Session {
	for _, s := range c.waiting {
		if !s.loggingIn.Load() {
			return s
		}
	}
	return nil
}

// loggedIn moves s out of the sessions before login.
func (a *admission) loggedIn(s *Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.clients[clientKey(s.Remote.Addr())]; c != nil && s.admitted && removeWaiting(c, s) {
		a.prelogin--
	}
}

// done forgets s, which has ended.
func (a *admission) done(s *Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.leave(s)
}

// leave forgets s; the lock is held. A session leaves once: evicted, or
// at its end.
func (a *admission) leave(s *Session) {
	if !s.admitted {
		return
	}
	s.admitted = false
	key := clientKey(s.Remote.Addr())
	c := a.clients[key]
	if c == nil {
		return
	}
	if removeWaiting(c, s) {
		a.prelogin--
	}
	c.sessions--
	a.total--
	if c.sessions == 0 {
		delete(a.clients, key)
	}
}

func removeWaiting(c *clientSessions, s *Session) bool {
	for i, w := range c.waiting {
		if w == s {
			c.waiting = append(c.waiting[:i], c.waiting[i+1:]...)
			return true
		}
	}
	return false
}

// counts reports the sessions in all and before login, for tests.
func (a *admission) counts() (total, prelogin int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total, a.prelogin
}
