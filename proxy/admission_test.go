package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	spec := ListenSpec{Address: "127.0.0.1:1143", MaxSessions: 6} // 3 may wait before login
	lim := Limits{MaxSessionsPerClient: 3, SessionsPerMinutePerClient: 1000}
	var a admission
	from := func(ip string) *Session {
		return &Session{Remote: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000)}
	}
	admit := func(s *Session) (*Session, bool) {
		evict, refusal := a.admit(s, spec, lim)
		return evict, refusal == ""
	}
	// One client: three sessions, then its per-client cap.
	x := []*Session{from("127.0.0.1"), from("127.0.0.1"), from("127.0.0.1")}
	for _, s := range x {
		if _, ok := admit(s); !ok {
			t.Fatal("a client under its cap was refused")
		}
	}
	if _, ok := admit(from("127.0.0.1")); ok {
		t.Error("a client over max_sessions_per_client was admitted")
	}
	// The pre-login budget is full: a newcomer takes the oldest waiting
	// session of the client holding the most.
	y := from("127.0.0.2")
	evict, ok := admit(y)
	if !ok || evict != x[0] {
		t.Fatalf("newcomer: admitted %v, evicted %v; want x[0] evicted", ok, evict)
	}
	// A logged-in session is never evicted.
	a.loggedIn(y)
	a.loggedIn(x[1])
	a.loggedIn(x[2])
	if total, pre := a.counts(); total != 3 || pre != 0 {
		t.Fatalf("counts %d/%d, want 3 in all, 0 before login", total, pre)
	}
	// Three more wait; the listener is then full (6 sessions, 3 waiting),
	// and a newcomer takes a waiting session from the client that holds
	// more than it does.
	z := []*Session{from("127.0.0.3"), from("127.0.0.3"), from("127.0.0.3")}
	for _, s := range z {
		if _, ok := admit(s); !ok {
			t.Fatal("a client under every limit was refused")
		}
	}
	w := from("127.0.0.4")
	if evict, ok := admit(w); !ok || evict != z[0] {
		t.Fatalf("newcomer when full: admitted %v, evicted %v", ok, evict)
	}
	// It may go on taking waiting sessions from a client that holds more
	// than it does, not from one that holds as many.
	a.loggedIn(w)
	w2 := from("127.0.0.4")
	if evict, ok := admit(w2); !ok || evict != z[1] {
		t.Fatalf("second newcomer session: admitted %v, evicted %v", ok, evict)
	}
	if _, ok := admit(from("127.0.0.4")); ok {
		t.Error("a client holding more sessions than the one it would evict was admitted")
	}
	for _, s := range []*Session{x[1], x[2], y, z[0], z[1], z[2], w, w2} {
		a.done(s)
		a.done(s) // twice: a session leaves once
	}
	if total, pre := a.counts(); total != 0 || pre != 0 || len(a.clients) != 0 {
		t.Errorf("after every session ended: %d/%d, %d clients", total, pre, len(a.clients))
	}
}

// TestAdmissionRate: a client may start sessions_per_minute_per_client
// sessions at once, then one every 60/that seconds; its allowance is its
// own, and forgotten once full.
func TestAdmissionRate(t *testing.T) {
	spec := ListenSpec{Address: "127.0.0.1:1143", MaxSessions: 100}
	lim := Limits{MaxSessionsPerClient: 100, SessionsPerMinutePerClient: 60}
	now := time.Unix(1000, 0)
	a := admission{now: func() time.Time { return now }}
	start := func(ip string) bool {
		s := &Session{Remote: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000)}
		_, refusal := a.admit(s, spec, lim)
		a.done(s) // connects and hangs up at once
		return refusal == ""
	}
	for i := range 60 {
		if !start("127.0.0.1") {
			t.Fatalf("session %d of the first 60 was refused", i+1)
		}
	}
	if start("127.0.0.1") {
		t.Error("the 61st session within the same instant was admitted")
	}
	if !start("127.0.0.2") {
		t.Error("another client was refused: allowances are per client")
	}
	now = now.Add(time.Second)
	if !start("127.0.0.1") || start("127.0.0.1") {
		t.Error("after a second, want exactly one more session")
	}
	now = now.Add(2 * time.Minute)
	for i := range maxRates + 100 { // many clients: the map stays bounded
		now = now.Add(time.Millisecond)
		start(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())
	}
	if len(a.rates) > maxRates+1 { // +1: the allowance the rest share
		t.Errorf("%d allowances remembered, want at most %d", len(a.rates), maxRates+1)
	}
}

// TestAdmissionRateAllClients: a program cycling through loopback
// addresses (each a client of its own) still gets no more than
// allClientsFactor clients' worth of new sessions a minute in all; the
// refusal says which bound it met.
func TestAdmissionRateAllClients(t *testing.T) {
	spec := ListenSpec{Address: "127.0.0.1:1143", MaxSessions: 100}
	lim := Limits{MaxSessionsPerClient: 100, SessionsPerMinutePerClient: 6}
	now := time.Unix(1000, 0)
	a := admission{now: func() time.Time { return now }}
	admitted, last := 0, ""
	for i := range 1000 {
		s := &Session{Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), 40000)}
		_, refusal := a.admit(s, spec, lim)
		a.done(s)
		if refusal == "" {
			admitted++
		} else {
			last = refusal
		}
	}
	if admitted != allClientsFactor*6 {
		t.Errorf("%d sessions from 1000 addresses at once, want %d", admitted, allClientsFactor*6)
	}
	if !strings.Contains(last, "all clients together") {
		t.Errorf("refusal %q", last)
	}
	now = now.Add(10 * time.Second) // 10 s of 60/minute: 10 more
	admitted = 0
	for i := range 100 {
		s := &Session{Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, 0, byte(i)}), 40000)}
		if _, refusal := a.admit(s, spec, lim); refusal == "" {
			admitted++
		}
		a.done(s)
	}
	if admitted != 10 {
		t.Errorf("after 10 s, %d more sessions, want 10", admitted)
	}
}

// TestAdmissionSparesLoginInProgress: a session whose login is at the
// provider is never closed to make room.
func TestAdmissionSparesLoginInProgress(t *testing.T) {
	spec := ListenSpec{Address: "127.0.0.1:1143", MaxSessions: 4} // 2 may wait
	lim := Limits{MaxSessionsPerClient: 4, SessionsPerMinutePerClient: 1000}
	var a admission
	from := func(ip string) *Session {
		return &Session{Remote: netip.AddrPortFrom(netip.MustParseAddr(ip), 40000)}
	}
	x := []*Session{from("127.0.0.1"), from("127.0.0.1")}
	for _, s := range x {
		if _, r := a.admit(s, spec, lim); r != "" {
			t.Fatal(r)
		}
	}
	x[0].loggingIn.Store(true)
	n1 := from("127.0.0.2")
	if evict, r := a.admit(n1, spec, lim); r != "" || evict != x[1] {
		t.Fatalf("evicted %v (%s), want the session not logging in", evict, r)
	}
	// Both waiting sessions are logging in: nothing to evict, the
	// newcomer is refused.
	n1.loggingIn.Store(true)
	if evict, r := a.admit(from("127.0.0.3"), spec, lim); r == "" || evict != nil {
		t.Fatalf("a session logging in was evicted (%v)", evict)
	}
}
