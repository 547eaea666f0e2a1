package policy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// The audit event names (the `msg` of each JSON line).
const (
	EventListenerStart   = "listener.start"
	EventSessionStart    = "session.start"
	EventUpstreamConnect = "upstream.connect"
	EventUpstreamTLS     = "upstream.tls"
	EventAuth            = "auth"
	EventDenied          = "policy.denied"
	EventSessionEnd      = "session.end"
	EventConfigReload    = "config.reload"
	EventSessionPanic    = "session.panic"
	EventOAuth2Token     = "oauth2.token"
)

// Audit writes the audit trail: one JSON object a line, as log/slog's
// JSONHandler writes them. Each event is a single Write on the underlying
// writer, so an *os.File sees every event as soon as it happens.
//
// The methods take host names, addresses, user names, TLS facts and counts.
// None takes a credential or message content, and none accepts free-form
// attributes, so neither can reach the log.
type Audit struct {
	log     *slog.Logger
	refused *refusals // aggregates Refused (flood.go)
}

// NewAudit returns an Audit writing JSON lines to w at level and above,
// and telling observers of every event (event.go), whatever the level.
// Call Close when done with it, to write the counts of refusals it holds
// back (Refused).
func NewAudit(w io.Writer, level slog.Level, observers ...Observer) *Audit {
	var h slog.Handler = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	if len(observers) > 0 {
		h = &teeHandler{next: h, observers: observers}
	}
	return &Audit{log: slog.New(h), refused: newRefusals()}
}

// Discard is an Audit that writes nothing.
func Discard() *Audit { return NewAudit(io.Discard, slog.LevelError+1) }

// ParseLevel parses "debug", "info", "warn" or "error".
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// ListenerStart records a listener that is up.
func (a *Audit) ListenerStart(address string, proto Proto, provider, upstream string) {
	a.log.Info(EventListenerStart, "address", address, "proto", string(proto), "provider", provider, "upstream", upstream)
}

// Denied records a refusal outside any connection (configuration time).
// It does nothing unless err is or wraps a *Denied.
func (a *Audit) Denied(err error) {
	writeDenied(a.log, err)
}

// ConfigReload records the outcome of re-reading the configuration.
func (a *Audit) ConfigReload(path string, err error) {
	if err != nil {
		a.log.Error(EventConfigReload, "file", path, "result", "refused", "error", err.Error())
		return
	}
	a.log.Info(EventConfigReload, "file", path, "result", "ok")
}

// Session returns the audit trail of one connection: every event it writes
// carries conn and proto.
func (a *Audit) Session(conn string, proto Proto) *SessionAudit {
	return &SessionAudit{log: a.log.With("conn", conn, "proto", string(proto)), base: a.log, conn: conn, denials: &denials{}}
}

// SessionAudit writes the events of one connection.
type SessionAudit struct {
	log     *slog.Logger
	base    *slog.Logger // without conn and proto
	conn    string
	denials *denials // shared with As's trails of the same connection
}

// maxSessionDenials is how many refusals one connection writes on their
// own; the rest are counted into one event at its end, so that an app
// repeating a refused command (a few bytes each, thousands within the
// pre-login budget) cannot write thousands of lines.
const maxSessionDenials = 20

// denials counts one connection's refusals.
type denials struct {
	mu      sync.Mutex
	written int
	more    int64
	since   time.Time
	last    error // the latest refusal not written on its own
}

// As returns the audit trail of the same connection's work in another
// protocol: a login's request to the provider's OAuth2 token endpoint is
// audited under the session's conn with proto "https".
func (s *SessionAudit) As(proto Proto) *SessionAudit {
	return &SessionAudit{log: s.base.With("conn", s.conn, "proto", string(proto)), base: s.base, conn: s.conn, denials: s.denials}
}

// Start records a client that connected to a listener serving provider
// (its name, or "*" for a listener that routes by login).
func (s *SessionAudit) Start(client, provider string) {
	s.log.Info(EventSessionStart, "client", client, "provider", provider)
}

// UpstreamConnect records a TCP connection to the provider.
func (s *SessionAudit) UpstreamConnect(host, addr string) {
	s.log.Info(EventUpstreamConnect, "host", host, "addr", addr)
}

// UpstreamConnectVia records a connection to the provider through a SOCKS5
// proxy: via is the proxy's address, addr what the proxy was asked to
// connect to ("HOST:PORT" when the proxy resolved the name).
func (s *SessionAudit) UpstreamConnectVia(host, addr, via string) {
	s.log.Info(EventUpstreamConnect, "host", host, "addr", addr, "via", via)
}

// TLSFacts are the checked facts of an accepted upstream handshake.
type TLSFacts struct {
	// Provider is the name of the provider dialled.
	Provider    string
	Host        string
	Version     uint16
	CipherSuite uint16
	Group       tls.CurveID
	Verified    bool
	// SPKISHA256 is the base64 SHA-256 of the leaf's SubjectPublicKeyInfo.
	SPKISHA256 string
	// Pinned is true when the provider has pins and one matched.
	Pinned bool
	// Legacy is true when the version is below TLS 1.2, which only a
	// provider with min_tls below "1.2" can negotiate.
	Legacy bool
	// NotAfter is when the provider's certificate expires.
	NotAfter time.Time
	// AnchorSHA256 is the trust anchor's SPKI hash ("sha256/<base64>"):
	// the root of the verified chain.
	AnchorSHA256 string
	// TOFU is what trust on first use did: TOFULearned, TOFUMatch or
	// TOFUOff (empty means off).
	TOFU string
}

// What trust on first use did with a connection's trust anchor, as the
// upstream.tls event's tofu field says.
const (
	// TOFULearned: the host had no anchor yet; this one is now remembered.
	TOFULearned = "learned"
	// TOFUMatch: the anchor is the one remembered for the host.
	TOFUMatch = "match"
	// TOFUOff: not checked (tofu = false, pins configured, or no store).
	TOFUOff = "off"
)

// GroupName spells a key exchange group as Go does ("X25519MLKEM768").
func GroupName(g tls.CurveID) string {
	if g == 0 {
		return "none"
	}
	return g.String()
}

// UpstreamTLS records an accepted handshake. A legacy version (below
// TLS 1.2) is written at warning level with a `warning` field, every time.
func (s *SessionAudit) UpstreamTLS(f TLSFacts) {
	pin := "none"
	if f.Pinned {
		pin = "ok"
	}
	attrs := []any{
		"provider", f.Provider,
		"host", f.Host,
		"tls_version", TLSVersionName(f.Version),
		"cipher", tls.CipherSuiteName(f.CipherSuite),
		"group", GroupName(f.Group),
		"verified", f.Verified,
		"spki_sha256", f.SPKISHA256,
		"pin", pin,
		"not_after", f.NotAfter.UTC().Format(time.RFC3339),
		"anchor_sha256", f.AnchorSHA256,
		"tofu", cmp.Or(f.TOFU, TOFUOff),
	}
	if f.Legacy {
		attrs = append(attrs, "warning", "legacy TLS version allowed by this provider's min_tls")
		s.log.Warn(EventUpstreamTLS, attrs...)
		return
	}
	s.log.Info(EventUpstreamTLS, attrs...)
}

// Auth records a login result. user is the login name as the app gave it.
func (s *SessionAudit) Auth(user string, ok bool) {
	result := "fail"
	if ok {
		result = "ok"
	}
	s.log.Info(EventAuth, "user", Escape(user), "result", result)
}

// OAuth2 token results (the `result` of oauth2.token).
const (
	TokenRefreshed = "refreshed" // a new access token (and maybe a rotated refresh token)
	TokenFailed    = "failed"    // the token endpoint could not be used; try again later
	TokenRevoked   = "revoked"   // the provider no longer accepts the grant: authorize again
)

// OAuth2Token records a request to a provider's token endpoint for
// account: its result and, when refreshed, the access token's lifetime in
// seconds (0 when the provider did not say). No token is ever written.
func (s *SessionAudit) OAuth2Token(provider, account, result string, expiresIn int64) {
	attrs := []any{"account", Escape(account), "provider", provider, "result", result}
	if result == TokenRefreshed {
		s.log.Info(EventOAuth2Token, append(attrs, "expires_in", expiresIn)...)
		return
	}
	s.log.Warn(EventOAuth2Token, attrs...)
}

// OAuth2TokenNotStored is a refresh that worked whose record could not be
// written back: result refreshed, at WARN, with the error; rotated says
// the new refresh token is held in memory only until a write succeeds.
func (s *SessionAudit) OAuth2TokenNotStored(provider, account string, expiresIn int64, rotated bool, err error) {
	msg := "the refreshed grant could not be stored; the one on disk still holds it: " + oneLine(err.Error())
	if rotated {
		msg = "the rotated grant could not be stored: it is kept in memory and written at the next login; if mailproxy stops first, run mailproxy authorize again: " + oneLine(err.Error())
	}
	s.log.Warn(EventOAuth2Token, "account", Escape(account), "provider", provider, "result", TokenRefreshed, "expires_in", expiresIn, "error", msg)
}

// Escape makes text the app chose (a user name) safe to show in one log
// field: control characters (C0 and C1), other non-graphic runes (line
// separators, bidirectional overrides), backslashes and invalid UTF-8
// become Go escapes (\x00, \n, \u202e, \\), so that what is printed says
// exactly what was sent, and nothing can forge or split a line.
func Escape(s string) string {
	clean := true
	for i, r := range s {
		if !strconv.IsGraphic(r) || r == '\\' || (r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD")) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	q = q[1 : len(q)-1]
	return strings.ReplaceAll(q, `\"`, `"`)
}

// Panic records a panic that ended the session: mailproxy's own fault.
// The value and the stack (function names and code positions, with the
// raw argument words Go prints) go in fields of one event, so that the log
// stays one JSON object a line.
func (s *SessionAudit) Panic(value any, stack []byte) {
	s.log.Error(EventSessionPanic, "panic", oneLine(fmt.Sprint(value)), "stack", string(stack))
}

// Denied records a refusal. It does nothing unless err is or wraps a
// *Denied, and returns whether it wrote an event.
//
// Past maxSessionDenials refusals in one connection, the rest are counted
// and End writes the latest of them with the count.
func (s *SessionAudit) Denied(err error) bool {
	var d *Denied
	if !errors.As(err, &d) {
		return false
	}
	if dn := s.denials; dn != nil {
		dn.mu.Lock()
		if dn.written >= maxSessionDenials {
			if dn.more == 0 {
				dn.since = time.Now()
			}
			dn.more++
			dn.last = err
			dn.mu.Unlock()
			return true
		}
		dn.written++
		dn.mu.Unlock()
	}
	return writeDenied(s.log, err)
}

// DeniedCount records, in one event, count refusals like err that the
// session did not write on their own, since since: the closing event of
// refusals it aggregates, with `count` and `since` as Audit.Refused
// writes them. It does nothing unless err is or wraps a *Denied.
func (s *SessionAudit) DeniedCount(err error, count int64, since time.Time) bool {
	return writeDenied(s.log, err, "count", count, "since", since)
}

func writeDenied(l *slog.Logger, err error, extra ...any) bool {
	var d *Denied
	if !errors.As(err, &d) {
		return false
	}
	attrs := []any{"reason", string(d.Reason)}
	if d.Host != "" {
		attrs = append(attrs, "host", d.Host)
	}
	// Room for a changed trust anchor's two subjects and hashes.
	attrs = append(attrs, "detail", clipLine(d.AuditDetail(), 600))
	attrs = append(attrs, extra...)
	l.Log(context.Background(), slog.LevelWarn, EventDenied, attrs...)
	return true
}

// SessionStats are the counts written at the end of a session.
type SessionStats struct {
	BytesUp   int64 // from the app towards the provider
	BytesDown int64 // from the provider towards the app
	Duration  time.Duration
	// Mail is counted by the SMTP relay; nil for IMAP and POP3.
	Mail *MailCounts
	// Err is why the session ended, if not by an orderly close.
	Err error
}

// MailCounts are what an SMTP session submitted: messages the provider
// accepted, and the recipients it accepted for them.
type MailCounts struct {
	Messages, Recipients int
	// Scrubbed is the number of header fields (a folded field counts
	// once) removed from the top-level headers of the messages sent.
	Scrubbed int
}

// FlushDenied writes the count of the refusals not written on their own
// (past maxSessionDenials), if any. End does; a trail that has no
// session.end (a command's, such as authorize's) calls it when done.
func (s *SessionAudit) FlushDenied() {
	dn := s.denials
	if dn == nil {
		return
	}
	dn.mu.Lock()
	more, since, last := dn.more, dn.since, dn.last
	dn.more, dn.last = 0, nil
	dn.mu.Unlock()
	if more > 0 {
		writeDenied(s.log, last, "count", more, "since", since)
	}
}

// End records the end of a session (after the count of refusals it did
// not write on their own, if any).
func (s *SessionAudit) End(st SessionStats) {
	s.FlushDenied()
	attrs := []any{
		"bytes_up", st.BytesUp,
		"bytes_down", st.BytesDown,
		"duration_ms", st.Duration.Milliseconds(),
	}
	if st.Mail != nil {
		attrs = append(attrs, "messages", st.Mail.Messages, "recipients", st.Mail.Recipients, "scrubbed", st.Mail.Scrubbed)
	}
	if st.Err != nil {
		attrs = append(attrs, "error", oneLine(st.Err.Error()))
	}
	s.log.Info(EventSessionEnd, attrs...)
}

func oneLine(s string) string { return clipLine(s, 300) }

// clipLine is s on one line, cut after max bytes.
func clipLine(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
