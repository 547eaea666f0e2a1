package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"mailproxy/internal/testkit"
)

// fakeClock is a clock whose time moves only when a test says so; Advance
// runs the timers that fall due, as time.AfterFunc would.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool // fired or stopped
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.done {
			return false
		}
		t.done = true
		return true
	}
}

// Advance moves the time by d and runs the timers due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// Skip moves the time by d without running any timer: a late scheduler.
func (c *fakeClock) Skip(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// live is the number of timers neither fired nor stopped.
func (c *fakeClock) live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.done {
			n++
		}
	}
	return n
}

func newFloodAudit() (*Audit, *fakeClock, *testkit.Buffer) {
	var buf testkit.Buffer
	a := NewAudit(&buf, slog.LevelInfo)
	c := newFakeClock()
	a.refused.clock = c
	return a, c, &buf
}

// events parses the log, one JSON object a line, failing on anything else.
func events(t testing.TB, log string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	sc := bufio.NewScanner(bytes.NewBufferString(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d is not one JSON object: %v\n%s", len(evs)+1, err, sc.Bytes())
		}
		evs = append(evs, ev)
	}
	return evs
}

// tally is how many refusals the events account for: 1 for an event without
// count, count for one with it.
func tally(t testing.TB, evs []map[string]any) int64 {
	t.Helper()
	var n int64
	for _, ev := range evs {
		if ev["msg"] != EventDenied {
			t.Fatalf("unexpected event %v", ev)
		}
		c, ok := ev["count"]
		if !ok {
			n++
			continue
		}
		f, _ := c.(float64)
		if f <= 0 {
			t.Fatalf("count event with count %v", c)
		}
		n += int64(f)
	}
	return n
}

func keys(ev map[string]any) []string {
	var ks []string
	for k := range ev {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

var (
	lan     = netip.MustParseAddr("192.0.2.7")
	lan2    = netip.MustParseAddr("192.0.2.8")
	outside = func(c netip.Addr) error {
		return Deny(ReasonRemoteClient, c.String(), "client %v is not in allow_clients of listener 127.0.0.1:1143", c)
	}
	full = Deny(ReasonLimit, "", "listener 127.0.0.1:1143 already has 64 sessions (max_sessions)")
)

const floodLn = "127.0.0.1:1143"

func TestRefusedOneClient(t *testing.T) {
	a, clk, buf := newFloodAudit()
	start := clk.Now()
	for range 10000 {
		a.Refused(floodLn, IMAP, lan, outside(lan))
	}
	evs := events(t, buf.String())
	if len(evs) != 1 {
		t.Fatalf("%d events during the interval, want 1:\n%s", len(evs), buf)
	}
	first := evs[0]
	want := []string{"client", "detail", "host", "level", "listener", "msg", "proto", "reason", "time"}
	if got := keys(first); !slices.Equal(got, want) {
		t.Errorf("first event fields %v, want %v", got, want)
	}
	if first["level"] != "WARN" || first["reason"] != "remote_client" || first["client"] != "192.0.2.7" ||
		first["host"] != "192.0.2.7" || first["listener"] != floodLn || first["proto"] != "imap" ||
		first["detail"] != "client 192.0.2.7 is not in allow_clients of listener 127.0.0.1:1143" {
		t.Errorf("first event %v", first)
	}

	clk.Advance(RefusalInterval - time.Nanosecond)
	if n := len(events(t, buf.String())); n != 1 {
		t.Fatalf("%d events before the interval ended, want 1", n)
	}
	clk.Advance(time.Nanosecond)
	evs = events(t, buf.String())
	if len(evs) != 2 {
		t.Fatalf("%d events after the interval, want 2:\n%s", len(evs), buf)
	}
	cnt := evs[1]
	want = []string{"client", "count", "detail", "host", "level", "listener", "msg", "proto", "reason", "since", "time"}
	if got := keys(cnt); !slices.Equal(got, want) {
		t.Errorf("count event fields %v, want %v", got, want)
	}
	for _, f := range []string{"level", "msg", "reason", "host", "detail", "client", "listener", "proto"} {
		if cnt[f] != first[f] {
			t.Errorf("count event %s = %v, first event %v", f, cnt[f], first[f])
		}
	}
	if cnt["count"] != 9999.0 {
		t.Errorf("count = %v, want 9999 (10000 refusals, the first written)", cnt["count"])
	}
	if cnt["since"] != start.Format(time.RFC3339Nano) {
		t.Errorf("since = %v, want %v", cnt["since"], start.Format(time.RFC3339Nano))
	}
	if clk.live() != 0 {
		t.Errorf("%d timers left running after the interval", clk.live())
	}

	// The next interval starts afresh: its first refusal is written at once.
	a.Refused(floodLn, IMAP, lan, outside(lan))
	if n := len(events(t, buf.String())); n != 3 {
		t.Fatalf("%d events after a refusal in a new interval, want 3", n)
	}
	// A quiet interval writes no count.
	clk.Advance(RefusalInterval)
	if evs := events(t, buf.String()); len(evs) != 3 || tally(t, evs) != 10001 {
		t.Fatalf("after a quiet interval: %d events for %d refusals, want 3 for 10001", len(evs), tally(t, evs))
	}
}

func TestRefusedKeys(t *testing.T) {
	a, clk, buf := newFloodAudit()
	for range 3 {
		a.Refused(floodLn, IMAP, lan, outside(lan))
		a.Refused(floodLn, IMAP, lan2, outside(lan2))
		a.Refused(floodLn, IMAP, lan2, outside(lan2))
		a.Refused(floodLn, IMAP, lan, full)                                             // another reason
		a.Refused("127.0.0.1:1587", SMTP, lan, outside(lan))                            // another listener
		a.Refused(floodLn, IMAP, netip.MustParseAddr("::ffff:192.0.2.7"), outside(lan)) // the same client
	}
	if n := len(events(t, buf.String())); n != 4 {
		t.Fatalf("%d events written at once, want 4 (one a key):\n%s", n, buf)
	}
	clk.Advance(RefusalInterval)
	evs := events(t, buf.String())
	type key struct{ client, reason, listener string }
	got := map[key]any{}
	for _, ev := range evs[4:] {
		got[key{ev["client"].(string), ev["reason"].(string), ev["listener"].(string)}] = ev["count"]
	}
	want := map[key]any{
		{"192.0.2.7", "remote_client", floodLn}:          5.0,
		{"192.0.2.8", "remote_client", floodLn}:          5.0,
		{"192.0.2.7", "limit", floodLn}:                  2.0,
		{"192.0.2.7", "remote_client", "127.0.0.1:1587"}: 2.0,
	}
	if len(evs) != 8 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v\n%s", got, want, buf)
	}
	if n := tally(t, evs); n != 18 {
		t.Errorf("events account for %d refusals, want 18", n)
	}
	for _, ev := range evs {
		if ev["reason"] == "limit" {
			if _, ok := ev["host"]; ok {
				t.Errorf("a refusal without a host written with one: %v", ev)
			}
		}
	}
}

// addr6 is the i-th address of one IPv6 /64: what an attacker holding a
// /64 can connect from.
func addr6(i int) netip.Addr {
	b := netip.MustParseAddr("2001:db8::").As16()
	b[12], b[13], b[14], b[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return netip.AddrFrom16(b)
}

func TestRefusedManyClients(t *testing.T) {
	const refusals, clients = 100000, 10000
	bound := 2*RefusalClients + 1 // one kind

	t.Run("one interval", func(t *testing.T) {
		a, _, buf := newFloodAudit()
		for i := range refusals {
			c := addr6(i % clients)
			a.Refused(floodLn, IMAP, c, outside(c))
		}
		if n := len(events(t, buf.String())); n != RefusalClients {
			t.Errorf("%d events during the interval, want %d (one a tracked client)", n, RefusalClients)
		}
		a.Close()
		evs := events(t, buf.String())
		if len(evs) > bound {
			t.Errorf("%d lines, more than the bound %d", len(evs), bound)
		}
		if n := tally(t, evs); n != refusals {
			t.Errorf("events account for %d refusals, want %d", n, refusals)
		}
		last := evs[len(evs)-1]
		if last["client"] != FoldedClient || last["count"] != float64(refusals-10*RefusalClients) {
			t.Errorf("last event %v, want client * with count %d", last, refusals-10*RefusalClients)
		}
		if want := []string{"client", "count", "detail", "level", "listener", "msg", "proto", "reason", "since", "time"}; !slices.Equal(keys(last), want) {
			t.Errorf("* event fields %v, want %v", keys(last), want)
		}
	})

	t.Run("ten intervals", func(t *testing.T) {
		a, clk, buf := newFloodAudit()
		for i := range refusals {
			if i > 0 && i%(refusals/10) == 0 {
				clk.Advance(RefusalInterval)
			}
			c := addr6(i % clients)
			a.Refused(floodLn, IMAP, c, outside(c))
		}
		a.Close()
		evs := events(t, buf.String())
		if len(evs) > 10*bound {
			t.Errorf("%d lines in 10 intervals, more than the bound %d", len(evs), 10*bound)
		}
		if n := tally(t, evs); n != refusals {
			t.Errorf("events account for %d refusals, want %d", n, refusals)
		}
	})
}

func TestRefusedClose(t *testing.T) {
	a, clk, buf := newFloodAudit()
	for range 5 {
		a.Refused(floodLn, IMAP, lan, full)
	}
	a.Close()
	evs := events(t, buf.String())
	if len(evs) != 2 || evs[1]["count"] != 4.0 {
		t.Fatalf("Close wrote %v, want the pending count 4", evs)
	}
	if clk.live() != 0 {
		t.Errorf("%d timers left running after Close", clk.live())
	}
	// After Close, nothing is held back with nobody left to write it.
	a.Refused(floodLn, IMAP, lan, full)
	a.Refused(floodLn, IMAP, lan, full)
	if evs := events(t, buf.String()); len(evs) != 4 || tally(t, evs) != 7 || clk.live() != 0 {
		t.Errorf("after Close: %d events for %d refusals, %d timers; want 4 for 7, none", len(evs), tally(t, evs), clk.live())
	}
	a.Close() // twice is fine
}

func TestRefusedFlush(t *testing.T) {
	a, clk, buf := newFloodAudit()
	a.Refused(floodLn, IMAP, lan, full)
	a.Refused(floodLn, IMAP, lan, full)
	a.Flush()
	a.Refused(floodLn, IMAP, lan, full) // a new interval, with a timer of its own
	a.Refused(floodLn, IMAP, lan, full)
	a.Refused(floodLn, IMAP, lan, full)
	if n := len(events(t, buf.String())); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
	clk.Advance(RefusalInterval)
	evs := events(t, buf.String())
	if len(evs) != 4 || evs[3]["count"] != 2.0 || tally(t, evs) != 5 {
		t.Errorf("events %v, want a last count of 2", evs)
	}
}

// A timer that fires late does not stretch the interval: the next refusal
// ends it by the clock.
func TestRefusedLateTimer(t *testing.T) {
	a, clk, buf := newFloodAudit()
	a.Refused(floodLn, IMAP, lan, full)
	a.Refused(floodLn, IMAP, lan, full)
	clk.Skip(RefusalInterval)
	a.Refused(floodLn, IMAP, lan, full)
	evs := events(t, buf.String())
	if len(evs) != 3 || evs[1]["count"] != 1.0 || evs[2]["count"] != nil {
		t.Fatalf("events %v, want first, count 1, first", evs)
	}
	clk.Advance(0) // the stale timer fires now: nothing to write
	if n := len(events(t, buf.String())); n != 3 {
		t.Errorf("a stale timer wrote %d events", n-3)
	}
}

func TestRefusedOnlyDenied(t *testing.T) {
	a, _, buf := newFloodAudit()
	a.Refused(floodLn, IMAP, lan, errors.New("accept: too many open files"))
	a.Refused(floodLn, IMAP, lan, nil)
	a.Refused(floodLn, IMAP, lan, fmt.Errorf("refusing: %w", full))
	evs := events(t, buf.String())
	if len(evs) != 1 || evs[0]["reason"] != "limit" {
		t.Errorf("events %v, want the one wrapped *Denied", evs)
	}

	d := Discard()
	for range 10 {
		d.Refused(floodLn, IMAP, lan, full)
	}
	d.Close()
}

func TestRefusedConcurrent(t *testing.T) {
	const workers, each, clients = 16, 2000, RefusalClients + 44
	a, clk, buf := newFloodAudit()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	ticker := make(chan struct{})
	go func() {
		defer close(ticker)
		for {
			select {
			case <-stop:
				return
			default:
				clk.Advance(RefusalInterval / 4)
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				c := addr6((w*each + i) % clients)
				if i%2 == 0 {
					a.Refused(floodLn, IMAP, c, outside(c))
				} else {
					a.Refused(floodLn, IMAP, c, full)
				}
				if i%500 == 0 {
					a.Flush()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-ticker
	a.Close()
	evs := events(t, buf.String())
	if n := tally(t, evs); n != workers*each {
		t.Errorf("events account for %d refusals, want %d", n, workers*each)
	}
}

// The real clock's timer writes the counts without anything else happening.
func TestRefusedRealTimer(t *testing.T) {
	var buf testkit.Buffer
	a := NewAudit(&buf, slog.LevelInfo)
	// Long enough that the three refusals fall in one interval even on a
	// loaded machine; short enough for a test.
	a.refused.interval = 500 * time.Millisecond
	for range 3 {
		a.Refused(floodLn, IMAP, lan, full)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(events(t, buf.String())) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no count written by the timer:\n%s", buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Whatever the scheduling, the timer wrote a count and the events
	// account for the three refusals.
	evs := events(t, buf.String())
	if tally(t, evs) != 3 || !slices.ContainsFunc(evs, func(e map[string]any) bool { return e["count"] != nil }) {
		t.Errorf("events %v", evs)
	}
	a.Close()
}

// BenchmarkRefusedSuppressed is the cost of a refusal that is only counted:
// what every connection of a flood costs past the first of its interval.
func BenchmarkRefusedSuppressed(b *testing.B) {
	a := NewAudit(io.Discard, slog.LevelInfo) // the real clock
	err := outside(lan)
	a.Refused(floodLn, IMAP, lan, err)
	b.ReportAllocs()
	for b.Loop() {
		a.Refused(floodLn, IMAP, lan, err)
	}
	a.Close()
}

func BenchmarkRefusedSuppressedParallel(b *testing.B) {
	a := NewAudit(io.Discard, slog.LevelInfo) // the real clock
	err := outside(lan)
	a.Refused(floodLn, IMAP, lan, err)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Refused(floodLn, IMAP, lan, err)
		}
	})
	a.Close()
}
