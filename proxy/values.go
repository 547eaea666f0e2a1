package proxy

import (
	"crypto/tls"
	"time"

	"mailproxy/policy"
)

// LocalSecurity is what the app's side of a listener offers.
type LocalSecurity string

// The local security modes.
const (
	LocalNone     LocalSecurity = "none"     // plaintext (loopback, or a LAN with care)
	LocalSTARTTLS LocalSecurity = "starttls" // plaintext greeting, STARTTLS/STLS offered
	LocalTLS      LocalSecurity = "tls"      // TLS from the first byte
)

// Limits bound what one session may do. A zero field means the default
// written next to it; docs/design.md lists them.
type Limits struct {
	MaxSessions int // concurrent sessions per listener (100)
	// MaxSessionsPerClient bounds one client's concurrent sessions on a
	// listener (20); see admission.go for the whole rule.
	MaxSessionsPerClient int
	// SessionsPerMinutePerClient bounds how fast one client may start
	// sessions on a listener (60: one a second, sixty at once).
	SessionsPerMinutePerClient int
	PreauthTimeout             time.Duration // from connect to login (60s)
	IdleTimeout                time.Duration // after login, no traffic either way (35m, above IMAP's 29-minute IDLE)
	CommandTimeout             time.Duration // one exchange with the provider, one SMTP command of the app (5m)
	DialTimeout                time.Duration // connecting to the provider: TCP, STARTTLS and handshake together (30s)
	MaxLine                    int           // one command line before login (8 KiB)
	MaxLiteral                 int           // one IMAP literal before login (64 KiB)
	// MaxPrelogin bounds all the app's bytes mailproxy reads before
	// login, every line and literal of every command summed (64 KiB): the
	// ceiling of what an app can make mailproxy hold before it logs in.
	MaxPrelogin    int
	MaxMessageSize int64 // SMTP message size (0: the provider's SIZE, else 64 MiB)
	MaxRecipients  int   // SMTP recipients per message (100)
	// MaxHeaderBlock bounds a sent message's top-level header block, which
	// is held to remove the provider's scrub_headers (256 KiB).
	MaxHeaderBlock int
}

// DefaultLimits are the values a zero Limits field stands for.
var DefaultLimits = Limits{
	MaxSessions:                100,
	MaxSessionsPerClient:       20,
	SessionsPerMinutePerClient: 60,
	PreauthTimeout:             60 * time.Second,
	IdleTimeout:                35 * time.Minute,
	CommandTimeout:             5 * time.Minute,
	DialTimeout:                30 * time.Second,
	MaxLine:                    8 << 10,
	MaxLiteral:                 64 << 10,
	MaxPrelogin:                64 << 10,
	MaxRecipients:              100,
	MaxHeaderBlock:             256 << 10,
}

// WithDefaults returns l with every zero (or negative) field replaced by
// its default. MaxMessageSize stays 0: it means "the provider's SIZE".
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	pick := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	pickDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	pick(&l.MaxSessions, d.MaxSessions)
	pick(&l.MaxSessionsPerClient, d.MaxSessionsPerClient)
	pick(&l.SessionsPerMinutePerClient, d.SessionsPerMinutePerClient)
	pickDur(&l.PreauthTimeout, d.PreauthTimeout)
	pickDur(&l.IdleTimeout, d.IdleTimeout)
	pickDur(&l.CommandTimeout, d.CommandTimeout)
	pickDur(&l.DialTimeout, d.DialTimeout)
	pick(&l.MaxLine, d.MaxLine)
	pick(&l.MaxLiteral, d.MaxLiteral)
	pick(&l.MaxPrelogin, d.MaxPrelogin)
	pick(&l.MaxRecipients, d.MaxRecipients)
	pick(&l.MaxHeaderBlock, d.MaxHeaderBlock)
	if l.MaxMessageSize < 0 {
		l.MaxMessageSize = 0
	}
	return l
}

// ListenSpec is one listener: where it listens, what it relays to, and
// who may use it.
type ListenSpec struct {
	Proto   policy.Proto
	Address string // host:port, host an IP literal
	// Provider is the listener's provider, or nil when the login's domain
	// chooses among Settings.Providers ("*").
	Provider      *policy.Provider
	LocalSecurity LocalSecurity // "" means none
	Access        policy.Access
	// MaxSessions overrides Limits.MaxSessions for this listener when > 0.
	MaxSessions int
	// LocalCert and LocalKey name the app-side certificate; empty means
	// the generated one.
	LocalCert, LocalKey string
}

// ProviderName is the listener's provider name, or "*".
func (l ListenSpec) ProviderName() string {
	if l.Provider == nil {
		return "*"
	}
	return l.Provider.Name
}

// Upstream describes where the listener goes, for listener.start.
func (l ListenSpec) Upstream() string {
	if l.Provider == nil {
		return "by login domain"
	}
	e, _ := l.Provider.Endpoint(l.Proto)
	return e.String()
}

// Settings are what a listener needs to serve a session. A listener holds
// them behind an atomic pointer so that a configuration reload applies to
// new sessions while running ones keep theirs.
type Settings struct {
	// Front serves the listener's protocol. A reload that changes the
	// protocol changes the front for new sessions, on the same socket.
	Front     Front
	Listen    ListenSpec
	Providers []*policy.Provider // for routing on a "*" listener
	// Limits are used as given by NewListener and Update, which fill in
	// the defaults.
	Limits Limits
	// LocalTLS is the app-side TLS configuration when local_security is
	// starttls or tls; nil otherwise.
	LocalTLS *tls.Config
	// Grants gives access tokens for the logins of OAuth2 providers; nil
	// means such logins fail.
	Grants Grants
}

// normalized returns a copy with the defaults filled in.
func (s *Settings) normalized() *Settings {
	c := *s
	c.Limits = s.Limits.WithDefaults()
	if c.Listen.LocalSecurity == "" {
		c.Listen.LocalSecurity = LocalNone
	}
	if c.Listen.MaxSessions <= 0 {
		c.Listen.MaxSessions = c.Limits.MaxSessions
	}
	return &c
}
