package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Refusals before a session starts (a client outside allow_clients, a
// listener at max_sessions) cost an attacker one TCP connection each. If each
// wrote its own audit line, a connection flood would fill the disk with the
// audit log (issue 11: 1.39 million lines, 285 MB, in 150 s). Audit.Refused
// therefore writes them aggregated, by this rule:
//
//   - A kind of refusal is a listener address, its protocol and a reason; a
//     key is a kind and a client address (IPv4-mapped IPv6 addresses count as
//     IPv4).
//   - Refusals are counted in intervals of RefusalInterval. An interval opens
//     with the first refusal while none is open, and ends RefusalInterval
//     later (or at Flush or Close). All keys share the interval.
//   - The first refusal of a key in an interval is written at once, as a
//     `policy.denied` event (level WARN) with `reason`, `host` (when the
//     refusal names one), `detail`, `client`, `listener` and `proto`, and no
//     `conn`: no session exists. Further refusals of that key in the
//     interval are only counted.
//   - At most RefusalClients keys are tracked in an interval. A refusal whose
//     key is not tracked once that many are is not written: it is counted
//     for its kind under the client "*" (FoldedClient). An attacker with
//     many addresses (an IPv6 /64) thus costs other clients refused in the
//     same interval their own line, never their count.
//   - When the interval ends, each key with count > 0 is written as one
//     more `policy.denied` event: the fields of its first refusal (for "*":
//     no `host`, and a `detail` that says what "*" is, quoting the first
//     refusal folded into it), plus `count` and `since` (the interval's
//     start, RFC 3339 like `time`).
//   - `count` is the number of refusals of that key, in the interval from
//     `since` to the event's `time`, that were not written as events of
//     their own. For a client, the interval saw count+1 refusals (the first
//     was written); for "*", it saw count. Summing 1 for every event without
//     `count` and `count` for every event with it gives every refusal: none
//     is lost.
//
// The bound: an interval writes at most 2×RefusalClients + K lines, where K
// is the number of kinds that overflowed in it (at most 2 a listener today:
// remote_client and limit). Intervals do not overlap and each lasts
// RefusalInterval unless Flush or Close ends it, so any T seconds of
// flood write at most (⌈T/10⌉+1)×(512+K) lines, whatever the number of
// connections or source addresses. One client alone writes at most 2 lines
// an interval per kind. After Audit.Close, refusals are written one by one
// again: nothing would be left to write their counts.
//
// Sessions that start are not aggregated: every session keeps its full record
// (Audit.Session).
const (
	// RefusalInterval is how long refusals are counted before their counts
	// are written.
	RefusalInterval = 10 * time.Second
	// RefusalClients is how many (client, kind) keys an interval tracks one
	// by one.
	RefusalClients = 256
)

// FoldedClient is the `client` of the event that counts the refusals of one
// kind from clients past the first RefusalClients of an interval.
const FoldedClient = "*"

// clock is time as the aggregation sees it; tests replace it.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, unless stop is
	// called first.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

type refusalKind struct {
	listener string
	proto    Proto
	reason   Reason
}

type refusalKey struct {
	kind   refusalKind
	client netip.Addr
}

// refusalCount is one key's (or one kind's "*") part of an interval.
type refusalCount struct {
	key    refusalKey
	folded bool   // client "*"
	host   string // of the first refusal; "" for "*"
	detail string // of the first refusal, as written
	count  int64  // refusals not written as events of their own
	since  time.Time
}

// refusals aggregates Audit.Refused. Its memory is bounded by
// RefusalClients keys plus one per kind; kinds come from the configuration
// (listener addresses), never from the network.
type refusals struct {
	clock    clock
	interval time.Duration
	maxKeys  int

	mu     sync.Mutex
	start  time.Time   // of the open interval; zero when none is open
	stop   func() bool // the open interval's timer
	gen    uint64      // counts intervals, so a stale timer does nothing
	closed bool
	// writing counts the counts being written outside the lock (by the
	// timer or Flush), so that Close returns only after them: the audit
	// log's writer is closed right after.
	writing sync.WaitGroup
	keys    map[refusalKey]*refusalCount
	folded  map[refusalKind]*refusalCount
	order   []*refusalCount // keys then "*" entries, in first-seen order
}

func newRefusals() *refusals {
	return &refusals{
		clock:    realClock{},
		interval: RefusalInterval,
		maxKeys:  RefusalClients,
		keys:     make(map[refusalKey]*refusalCount),
		folded:   make(map[refusalKind]*refusalCount),
	}
}

// Refused records that listener (its address, serving proto) turned client
// away before a session started. It does nothing unless err is or wraps a
// *Denied. Refusals are aggregated by client and kind, so that a flood of
// them writes a bounded number of lines; the rule and the bound are
// documented at RefusalInterval. Refused is safe for concurrent use. A
// refusal that is only counted writes nothing and holds the lock for a map
// look-up, except the first after an interval ended whose timer has not run
// yet: that one writes the interval's counts (outside the lock).
func (a *Audit) Refused(listener string, proto Proto, client netip.Addr, err error) {
	d := asDenied(err)
	if d == nil {
		return
	}
	if !a.log.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	r := a.refused
	k := refusalKey{refusalKind{listener, proto, d.Reason}, client.Unmap()}

	r.mu.Lock()
	// Read under the lock, so that no interval can start before the one
	// that ended.
	now := r.clock.Now()
	var ended []refusalCount
	if !r.start.IsZero() && now.Sub(r.start) >= r.interval {
		// The timer is late: end the interval here, so that the bound
		// holds by the clock whatever the scheduler does.
		ended = r.endLocked()
	}
	if r.closed {
		r.mu.Unlock()
		a.writeCounts(ended)
		a.writeRefusal(k, d.Host, oneLine(d.AuditDetail()))
		return
	}
	if c := r.keys[k]; c != nil {
		c.count++
		r.mu.Unlock()
		a.writeCounts(ended)
		return
	}
	if r.start.IsZero() {
		a.startLocked(now)
	}
	if len(r.keys) >= r.maxKeys {
		c := r.folded[k.kind]
		if c == nil {
			c = &refusalCount{key: refusalKey{kind: k.kind}, folded: true, detail: oneLine(d.AuditDetail())}
			r.folded[k.kind] = c
			r.order = append(r.order, c)
		}
		c.count++
		r.mu.Unlock()
		a.writeCounts(ended)
		return
	}
	c := &refusalCount{key: k, host: d.Host, detail: oneLine(d.AuditDetail())}
	r.keys[k] = c
	r.order = append(r.order, c)
	r.mu.Unlock()
	a.writeCounts(ended)
	a.writeRefusal(k, c.host, c.detail)
}

// asDenied is the *Denied err is or wraps, or nil. A *Denied itself is
// found without errors.As, which would cost an allocation a refusal.
func asDenied(err error) *Denied {
	if d, ok := err.(*Denied); ok {
		return d
	}
	var d *Denied
	errors.As(err, &d)
	return d
}

// Flush ends the open interval of Refused now, writing its counts. Meant for
// tests and for shutdown: calling it often would weaken the bound.
func (a *Audit) Flush() {
	r := a.refused
	r.mu.Lock()
	ended := r.endLocked()
	r.writing.Add(1)
	r.mu.Unlock()
	defer r.writing.Done()
	a.writeCounts(ended)
}

// Close writes the counts Refused holds and stops its timer. After Close,
// nothing is held back: each refusal is written at once, unaggregated, as
// there would be nobody left to write its count. Call it when the listeners
// have stopped, before closing the audit log's writer. Close does not close
// that writer: NewAudit does not own it.
func (a *Audit) Close() {
	r := a.refused
	r.mu.Lock()
	ended := r.endLocked()
	r.closed = true
	r.mu.Unlock()
	a.writeCounts(ended)
	r.writing.Wait()
}

// startLocked opens an interval at now, with its timer.
func (a *Audit) startLocked(now time.Time) {
	r := a.refused
	r.start = now
	r.gen++
	gen := r.gen
	r.stop = r.clock.AfterFunc(r.interval, func() { a.expire(gen) })
}

// expire is the timer of interval gen.
func (a *Audit) expire(gen uint64) {
	r := a.refused
	r.mu.Lock()
	if r.gen != gen || r.start.IsZero() {
		r.mu.Unlock()
		return
	}
	ended := r.endLocked()
	r.writing.Add(1)
	r.mu.Unlock()
	defer r.writing.Done()
	a.writeCounts(ended)
}

// endLocked closes the open interval, if any, and returns the entries that
// have a count to write, with since set.
func (r *refusals) endLocked() []refusalCount {
	if r.start.IsZero() {
		return nil
	}
	var ended []refusalCount
	for _, c := range r.order {
		if c.count > 0 {
			e := *c
			e.since = r.start
			ended = append(ended, e)
		}
	}
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
	r.gen++
	r.start = time.Time{}
	clear(r.keys)
	clear(r.folded)
	clear(r.order)
	r.order = r.order[:0]
	return ended
}

func clientString(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.String()
}

func (a *Audit) writeRefusal(k refusalKey, host, detail string) {
	attrs := []any{"reason", string(k.kind.reason)}
	if host != "" {
		attrs = append(attrs, "host", host)
	}
	attrs = append(attrs, "detail", detail,
		"client", clientString(k.client), "listener", k.kind.listener, "proto", string(k.kind.proto))
	a.log.Log(context.Background(), slog.LevelWarn, EventDenied, attrs...)
}

func (a *Audit) writeCounts(ended []refusalCount) {
	for _, c := range ended {
		attrs := []any{"reason", string(c.key.kind.reason)}
		client := clientString(c.key.client)
		detail := c.detail
		if c.folded {
			client = FoldedClient
			detail = fmt.Sprintf("refusals from client addresses past the first %d of this interval, counted together; the first of them: %s",
				a.refused.maxKeys, c.detail)
		} else if c.host != "" {
			attrs = append(attrs, "host", c.host)
		}
		attrs = append(attrs, "detail", detail,
			"client", client, "listener", c.key.kind.listener, "proto", string(c.key.kind.proto),
			"count", c.count, "since", c.since)
		a.log.Log(context.Background(), slog.LevelWarn, EventDenied, attrs...)
	}
}
