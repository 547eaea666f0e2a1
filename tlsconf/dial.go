package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"time"

	"mailproxy/policy"
	"mailproxy/tlsconf/trust"
)

// DefaultTimeout bounds connecting, STARTTLS and the handshake together.
const DefaultTimeout = 30 * time.Second

// Dialer connects to providers under the policy. The zero value is ready to
// use: the system resolver, a 30-second timeout.
type Dialer struct {
	// Resolver looks up provider names; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Timeout bounds connect, STARTTLS and handshake; zero means the
	// deadline of the context given to Dial, or 30s when it has none.
	Timeout time.Duration
	// EHLOName is sent before SMTP STARTTLS; empty means "localhost", a
	// name that says nothing about the user's computer.
	EHLOName string
	// Trust remembers each host's trust anchor (trust on first use,
	// tofu.go); nil turns that off for every provider.
	Trust *trust.Store
}

// Upstream is an accepted, policed TLS connection to a provider.
type Upstream struct {
	*tls.Conn
	// Host is the name the certificate was verified for.
	Host string
	// Addr is the "ip:port" dialled, or through a SOCKS5 proxy what the
	// proxy was asked for ("HOST:PORT" with socks5h).
	Addr string
	// Facts are the checked handshake facts, as audited.
	Facts policy.TLSFacts
	// AfterSTARTTLS is true when the connection was upgraded with STARTTLS:
	// the pre-TLS greeting and capabilities were read and thrown away, and
	// no greeting follows on Conn. With implicit TLS the server's greeting
	// is the first thing to read.
	AfterSTARTTLS bool
}

// Dial connects to endpoint ep of provider p: it checks the host against the
// provider's allowlist, resolves it and checks every address, connects,
// performs STARTTLS when the endpoint says so, and completes a handshake
// under the provider's profile. audit, if not nil, receives the
// upstream.connect and upstream.tls events, and one policy.denied event for
// a refusal, which is returned as a *policy.Denied (the caller must not
// audit it again). Other errors (unreachable, timeout) are plain errors.
func (d *Dialer) Dial(ctx context.Context, p *policy.Provider, ep policy.Endpoint, audit *policy.SessionAudit) (*Upstream, error) {
	up, err := d.dial(ctx, p, ep, audit)
	if err != nil && audit != nil {
		audit.Denied(err)
	}
	return up, err
}

func (d *Dialer) dial(ctx context.Context, p *policy.Provider, ep policy.Endpoint, audit *policy.SessionAudit) (*Upstream, error) {
	ctx, cancel := d.limit(ctx)
	defer cancel()
	host := policy.NormalizeHost(ep.Host)
	pr, err := ProfileFor(p)
	if err != nil {
		return nil, err
	}
	raw, addr, err := d.connect(ctx, p, host, ep, audit)
	if err != nil {
		return nil, err
	}
	// Through a SOCKS5 proxy the diagnostic hello would be a direct
	// connection: no diagnosis there.
	return d.finish(ctx, raw, addr, pr, host, ep, audit, p.Via == nil)
}

// limit applies the dialer's own time limit, unless it has none and the
// caller's context brings one (the session's dial_timeout).
func (d *Dialer) limit(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := d.Timeout
	if _, has := ctx.Deadline(); timeout <= 0 && !has {
		timeout = DefaultTimeout
	}
	if timeout > 0 {
		return context.WithTimeout(ctx, timeout)
	}
	return ctx, func() {}
}

// connect checks host against the allowlist, resolves it, checks every
// address, connects to the first that answers — or asks the provider's
// SOCKS5 proxy to (socks.go) — and audits upstream.connect. addr is what
// was connected to: "ip:port", or what the proxy was asked for.
func (d *Dialer) connect(ctx context.Context, p *policy.Provider, host string, ep policy.Endpoint, audit *policy.SessionAudit) (raw net.Conn, addr string, err error) {
	if !p.Allows(host) {
		return nil, "", policy.Deny(policy.ReasonNonProviderHost, host,
			"%s is not in provider %q's hosts %v", host, p.Name, p.Hosts)
	}
	if policy.IsOnion(host) && (p.Via == nil || !p.Via.RemoteDNS) {
		return nil, "", policy.Deny(policy.ReasonNonProviderHost, host,
			"%s is an onion service: it is reachable only through Tor, with via = \"socks5h://...\"", host)
	}
	if p.Via != nil {
		// From the raw connection on, nothing differs.
		raw, target, err := d.socksConnect(ctx, p, host, ep)
		if err != nil {
			return nil, "", err
		}
		if audit != nil {
			audit.UpstreamConnectVia(host, target, p.Via.Addr.String())
		}
		return raw, target, nil
	}
	addrs, err := d.resolve(ctx, host, p.AllowPrivateAddresses)
	if err != nil {
		return nil, "", err
	}
	// Only the checked addresses are dialled (no second resolution). Each
	// gets a share of the time, so that one black-holed address does not
	// use it all up.
	nd := net.Dialer{KeepAliveConfig: keepAlive}
	for i, a := range addrs {
		target := netip.AddrPortFrom(a, ep.Port).String()
		actx, cancel := context.WithTimeout(ctx, perAddress(ctx, len(addrs)-i))
		raw, err = nd.DialContext(actx, "tcp", target)
		cancel()
		if err == nil {
			break
		}
	}
	if raw == nil {
		return nil, "", fmt.Errorf("connecting to %s: %w", ep.Addr(), err)
	}
	addr = raw.RemoteAddr().String()
	if audit != nil {
		audit.UpstreamConnect(host, addr)
	}
	return raw, addr, nil
}

// finish runs STARTTLS and the handshake on the raw connection to addr.
// canDiagnose is false through a proxy: the diagnostic hello would be a
// direct connection.
func (d *Dialer) finish(ctx context.Context, raw net.Conn, addr string, pr *Profile, host string, ep policy.Endpoint, audit *policy.SessionAudit, canDiagnose bool) (*Upstream, error) {
	up, err := d.handshake(ctx, raw, pr, host, ep)
	if err != nil {
		raw.Close()
		var quiet *hungUp
		if errors.As(err, &quiet) {
			if !canDiagnose {
				return nil, quiet.err
			}
			if better := d.diagnose(ctx, addr, pr, host, ep, audit); better != nil {
				return nil, better
			}
			return nil, quiet.err
		}
		return nil, err
	}
	up.Addr = addr
	if audit != nil {
		audit.UpstreamTLS(up.Facts)
	}
	return up, nil
}

// keepAlive probes an idle provider connection, so that a provider that
// vanished is noticed in about two minutes even during a silent IDLE.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4}

// perAddress shares the time left between the addresses still to try.
func perAddress(ctx context.Context, left int) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok || left < 1 {
		return DefaultTimeout
	}
	return time.Until(dl) / time.Duration(left)
}

// resolve looks host up and checks every address it resolves to. A name with
// any address the policy refuses is refused as a whole: a provider has no
// reason to publish one, and an attacker who controls DNS has every reason.
func (d *Dialer) resolve(ctx context.Context, host string, allowPrivate bool) ([]netip.Addr, error) {
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		r := d.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		addrs, err = r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolving %s: no addresses", host)
		}
	}
	for i, a := range addrs {
		a = a.Unmap()
		if err := policy.CheckAddr(host, a, allowPrivate); err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	return addrs, nil
}

// handshake runs STARTTLS if needed, then the TLS handshake and the checks
// of the negotiated state.
func (d *Dialer) handshake(ctx context.Context, raw net.Conn, pr *Profile, host string, ep policy.Endpoint) (*Upstream, error) {
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	up := &Upstream{Host: host}
	if ep.Security == policy.STARTTLS {
		if err := startTLS(raw, ep.Proto, host, d.EHLOName); err != nil {
			return nil, err
		}
		up.AfterSTARTTLS = true
	}
	// The raw socket, never a reader that may hold buffered bytes.
	tc := tls.Client(raw, pr.ClientConfig(host))
	if err := tc.HandshakeContext(ctx); err != nil {
		if _, alert := remoteAlert(err); !alert && silentHangUp(err) {
			return nil, &hungUp{Classify(host, err)}
		}
		return nil, Classify(host, err)
	}
	facts, err := pr.CheckState(host, tc.ConnectionState())
	if err == nil {
		err = d.checkAnchor(host, pr, tc.ConnectionState(), &facts)
	}
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	up.Conn = tc
	up.Facts = facts
	return up, nil
}

// hungUp is a handshake the server ended without an alert (EOF or reset),
// which diagnose may explain.
type hungUp struct{ err error }

func (h *hungUp) Error() string { return h.err.Error() }

func silentHangUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// TLS alerts that say why a server refused the handshake (RFC 8446 §6).
const (
	alertHandshakeFailure     = 40
	alertBadCertificate       = 42
	alertUnknownCA            = 48
	alertProtocolVersion      = 70
	alertInsufficientSecurity = 71
	alertInappropriateFallbck = 86
)

// Classify turns a handshake error into a *policy.Denied with the reason
// that names it; a timeout stays a plain error (nothing was refused).
func Classify(host string, err error) error {
	var d *policy.Denied
	if errors.As(err, &d) {
		return err
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var rootsErr x509.SystemRootsError
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr),
		errors.As(err, &invalid), errors.As(err, &rootsErr):
		return policy.Deny(policy.ReasonCertificate, host, "the certificate did not verify: %v", unwrapTLS(err))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("TLS handshake with %s: %w", host, err)
	}
	if a, ok := remoteAlert(err); ok {
		switch a {
		case alertProtocolVersion, alertInappropriateFallbck:
			return policy.Deny(policy.ReasonTLSVersion, host,
				"the server refused every TLS version the policy allows (it answered %v)", err)
		case alertHandshakeFailure, alertInsufficientSecurity:
			return policy.Deny(policy.ReasonCipher, host,
				"the server accepted none of the allowed ECDHE suites; it may offer only RSA key exchange, DHE or legacy ciphers (it answered %v)", err)
		}
		return policy.Deny(policy.ReasonHandshake, host, "the server ended the handshake: %v", err)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unsupported protocol version"), strings.Contains(msg, "downgrade attempt"):
		return policy.Deny(policy.ReasonTLSVersion, host, "the server chose a TLS version outside the policy: %v", unwrapTLS(err))
	case strings.Contains(msg, "unconfigured cipher suite"), strings.Contains(msg, "unsupported curve"),
		strings.Contains(msg, "unsupported signature algorithm"):
		return policy.Deny(policy.ReasonCipher, host, "the server chose a suite or key exchange outside the policy: %v", unwrapTLS(err))
	}
	return policy.Deny(policy.ReasonHandshake, host, "TLS handshake failed: %v", unwrapTLS(err))
}

// remoteAlert returns the alert a server sent, if err is one. Go reports it
// as a *net.OpError "remote error" around an unexported uint8 type.
func remoteAlert(err error) (uint8, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
		return uint8(v.Uint()), true
	}
	return 0, false
}

func unwrapTLS(err error) string {
	s := err.Error()
	return strings.TrimPrefix(s, "tls: ")
}
