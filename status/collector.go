// Package status shows what mailproxy is doing: a local status page and
// /metrics in the Prometheus text format, both served by Server, and the
// summary of an audit log that `mailproxy report` prints (report.go).
//
// Everything counted here is counted from the audit events themselves
// (Collector is a policy.Observer, told of each event as it is written),
// so the page and the metrics agree with the audit log of the same run by
// construction; what is live (sessions, their bytes so far) comes from the
// proxy's registry. Neither ever holds a password, a token or message
// content: the audit events carry none, and the registry keeps only the
// escaped login name. The status page does show user names.
package status

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailproxy/policy"
)

// MaxRefusals is how many refusals the status page keeps: the latest.
const MaxRefusals = 50

// Collector counts audit events: the metrics, the latest TLS facts of
// each provider and the latest refusals. Observe is safe for concurrent
// use; it holds a lock for a few map operations.
type Collector struct {
	Registry *prometheus.Registry
	started  time.Time

	sessions  *prometheus.CounterVec
	active    *prometheus.GaugeVec
	bytes     *prometheus.CounterVec
	auth      *prometheus.CounterVec
	denied    *prometheus.CounterVec
	tls       *prometheus.CounterVec
	handshake *prometheus.HistogramVec

	mu        sync.Mutex
	conns     map[string]*conn // running sessions, by conn id
	providers map[string]ProviderTLS
	refusals  []Refusal // oldest first, at most MaxRefusals
}

// conn is what the collector remembers of a running session.
type conn struct {
	proto    string
	listener string // the listener's provider: the labels of the active gauge
	provider string // the provider dialled last, else the listener's
	// connectedAt is the time of an upstream.connect not yet followed by
	// its upstream.tls.
	connectedAt time.Time
}

// ProviderTLS are the facts of the latest accepted handshake with a
// provider (its upstream.tls event).
type ProviderTLS struct {
	Provider, Host  string
	Version, Cipher string
	Group           string
	Verified        bool
	Pin             string // "ok" (a pin matched) or "none"
	// Trust is the trust-on-first-use state of the provider's root, when
	// the event has one (its `tofu` field: learned, match, off).
	Trust                string
	NotAfter             time.Time
	At                   time.Time
	HandshakeMillis      int64 // from TCP connected to the handshake checked; -1 unknown
	SPKISHA256, Protocol string
}

// Refusal is one policy.denied event.
type Refusal struct {
	At                   time.Time
	Reason, Host, Detail string
	Proto, Client        string
	// Count is the number of refusals it stands for: 1, or for an
	// aggregated event the refusals not written on their own.
	Count      int64
	Aggregated bool
}

// NewCollector returns a collector with its metrics registered.
func NewCollector() *Collector {
	c := &Collector{
		Registry:  prometheus.NewRegistry(),
		started:   time.Now(),
		conns:     map[string]*conn{},
		providers: map[string]ProviderTLS{},
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_sessions_total",
			Help: "Sessions started (session.start events), by protocol and the listener's provider (\"*\": chosen by login)."}, []string{"proto", "provider"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mailproxy_sessions_active",
			Help: "Sessions running (session.start without session.end yet), by protocol and the listener's provider."}, []string{"proto", "provider"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_bytes_total",
			Help: "Bytes relayed by sessions that ended (session.end bytes_up and bytes_down): up is app to provider, down provider to app."}, []string{"direction"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_auth_total",
			Help: "The provider's verdicts on logins (auth events), by protocol, provider and result (ok, fail)."}, []string{"proto", "provider", "result"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_policy_denied_total",
			Help: "Refusals (policy.denied events; an aggregated event adds its count), by reason."}, []string{"reason"}),
		tls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailproxy_upstream_tls_total",
			Help: "Accepted handshakes with providers (upstream.tls events), by provider and TLS version."}, []string{"provider", "tls_version"}),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mailproxy_upstream_handshake_seconds",
			Help:    "Time from TCP connected to the provider (upstream.connect) to its handshake accepted (upstream.tls), STARTTLS included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"provider"}),
	}
	c.Registry.MustRegister(c.sessions, c.active, c.bytes, c.auth, c.denied, c.tls, c.handshake)
	return c
}

// Started is when the collector started counting.
func (c *Collector) Started() time.Time { return c.started }

// Observe counts one audit event; it is a policy.Observer.
func (c *Collector) Observe(e policy.Event) {
	id := e.Str("conn")
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e.Msg {
	case policy.EventSessionStart:
		s := &conn{proto: e.Str("proto"), listener: e.Str("provider"), provider: e.Str("provider")}
		c.conns[id] = s
		c.sessions.WithLabelValues(s.proto, s.provider).Inc()
		c.active.WithLabelValues(s.proto, s.provider).Inc()
	case policy.EventSessionEnd:
		if s := c.conns[id]; s != nil {
			delete(c.conns, id)
			c.active.WithLabelValues(s.proto, s.listener).Dec()
		}
		c.bytes.WithLabelValues("up").Add(float64(e.Int("bytes_up")))
		c.bytes.WithLabelValues("down").Add(float64(e.Int("bytes_down")))
	case policy.EventUpstreamConnect:
		if s := c.conns[id]; s != nil {
			s.connectedAt = e.Time
		}
	case policy.EventUpstreamTLS:
		p := ProviderTLS{Provider: e.Str("provider"), Host: e.Str("host"), Version: e.Str("tls_version"),
			Cipher: e.Str("cipher"), Group: e.Str("group"), Verified: e.Bool("verified"), Pin: e.Str("pin"),
			Trust: e.Str("tofu"), At: e.Time, HandshakeMillis: -1, SPKISHA256: e.Str("spki_sha256"), Protocol: e.Str("proto")}
		if p.Provider == "" {
			p.Provider = p.Host
		}
		p.NotAfter, _ = time.Parse(time.RFC3339, e.Str("not_after"))
		if s := c.conns[id]; s != nil {
			if !s.connectedAt.IsZero() {
				d := e.Time.Sub(s.connectedAt)
				p.HandshakeMillis = d.Milliseconds()
				c.handshake.WithLabelValues(p.Provider).Observe(d.Seconds())
				s.connectedAt = time.Time{}
			}
			s.provider = p.Provider
		}
		c.tls.WithLabelValues(p.Provider, p.Version).Inc()
		if p.Protocol != string(policy.HTTPS) {
			// The page's row is the mail servers'; an OAuth2 token
			// endpoint's handshake is counted above only.
			c.providers[p.Provider] = p
		}
	case policy.EventAuth:
		proto, provider := e.Str("proto"), ""
		if s := c.conns[id]; s != nil {
			provider = s.provider
		}
		c.auth.WithLabelValues(proto, provider, e.Str("result")).Inc()
	case policy.EventDenied:
		r := Refusal{At: e.Time, Reason: e.Str("reason"), Host: e.Str("host"), Detail: e.Str("detail"),
			Proto: e.Str("proto"), Client: e.Str("client"), Count: 1}
		if n, ok := e.Fields["count"].(int64); ok {
			r.Count, r.Aggregated = n, true
		}
		c.denied.WithLabelValues(r.Reason).Add(float64(r.Count))
		if len(c.refusals) == MaxRefusals {
			c.refusals = slices.Delete(c.refusals, 0, 1)
		}
		c.refusals = append(c.refusals, r)
	}
}

// Providers returns the latest TLS facts of each provider, by name.
func (c *Collector) Providers() []ProviderTLS {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ProviderTLS, 0, len(c.providers))
	for _, p := range c.providers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ProviderTLS) int { return strings.Compare(a.Provider, b.Provider) })
	return out
}

// Refusals returns the latest refusals, newest first.
func (c *Collector) Refusals() []Refusal {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.refusals)
	slices.Reverse(out)
	return out
}
