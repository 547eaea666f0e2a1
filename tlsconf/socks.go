package tlsconf

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/proxy"

	"mailproxy/policy"
)

// The SOCKS5 path of Dial: the raw connection to the provider is a tunnel
// through the provider's proxy (policy.Via), made by golang.org/x/net/proxy;
// everything after it (STARTTLS, the handshake, verification, pins, the
// audit) is the same as on a direct connection, end to end through the
// tunnel.

type accountKey struct{}

// WithAccount returns a context that tells Dial which account the
// connection is for. A provider whose proxy isolates accounts
// (policy.Via.Isolate) derives the SOCKS credentials from it; nothing else
// uses it.
func WithAccount(ctx context.Context, account string) context.Context {
	return context.WithValue(ctx, accountKey{}, account)
}

// isolationKey keys the per-account SOCKS credentials: they stay the same
// for an account while the process runs (one circuit family), say nothing
// about the account to the proxy or its logs, and change at restart.
var isolationKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

// isolationAuth is the SOCKS username and password of account at provider.
// It is derived from the login name only, never from the mail password.
// With no account (`mailproxy check`), every connection gets credentials
// of its own.
func isolationAuth(ctx context.Context, provider string) *proxy.Auth {
	account, ok := ctx.Value(accountKey{}).(string)
	var sum []byte
	if ok {
		m := hmac.New(sha256.New, isolationKey)
		m.Write([]byte(provider))
		m.Write([]byte{0})
		m.Write([]byte(account))
		sum = m.Sum(nil)
	} else {
		sum = make([]byte, 32)
		rand.Read(sum)
	}
	return &proxy.Auth{User: "mailproxy-" + hex.EncodeToString(sum[:16]), Password: hex.EncodeToString(sum[16:])}
}

// socksConnect opens a tunnel to host (checked against the allowlist by
// the caller) at ep.Port through p.Via. It returns the connection and
// what the proxy was asked for: "HOST:PORT" with socks5h (the proxy
// resolves the name: mailproxy makes no lookup), "IP:PORT" with socks5
// (resolved and checked here like a direct connection).
func (d *Dialer) socksConnect(ctx context.Context, p *policy.Provider, host string, ep policy.Endpoint) (net.Conn, string, error) {
	v := p.Via
	if !v.AllowRemote && !v.Addr.Addr().IsLoopback() {
		// The configuration refuses this; a hand-built provider is checked
		// again here.
		return nil, "", policy.Deny(policy.ReasonNonProviderHost, v.Addr.Addr().String(),
			"the SOCKS proxy %s is not on this machine, and via_allow_remote is not set", v)
	}
	var auth *proxy.Auth
	switch {
	case v.Isolate:
		auth = isolationAuth(ctx, p.Name)
	case v.User != "":
		auth = &proxy.Auth{User: v.User, Password: v.Password}
	}
	nd := &net.Dialer{KeepAliveConfig: keepAlive}
	sd, err := proxy.SOCKS5("tcp", v.Addr.String(), auth, nd)
	if err != nil {
		return nil, "", err
	}
	cd := sd.(proxy.ContextDialer)

	var targets []string
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := policy.CheckAddr(host, ip.Unmap(), p.AllowPrivateAddresses); err != nil {
			return nil, "", err
		}
		targets = []string{netip.AddrPortFrom(ip.Unmap(), ep.Port).String()}
	} else if v.RemoteDNS {
		targets = []string{net.JoinHostPort(host, strconv.Itoa(int(ep.Port)))}
	} else {
		addrs, err := d.resolve(ctx, host, p.AllowPrivateAddresses)
		if err != nil {
			return nil, "", err
		}
		for _, a := range addrs {
			targets = append(targets, netip.AddrPortFrom(a, ep.Port).String())
		}
	}
	var last error
	for i, t := range targets {
		actx, cancel := context.WithTimeout(ctx, perAddress(ctx, len(targets)-i))
		c, err := cd.DialContext(actx, "tcp", t)
		cancel()
		if err == nil {
			return c, t, nil
		}
		se := socksError(v, t, err)
		last = se
		if se.Reply == 0 {
			break // the proxy itself failed: it would fail every address
		}
	}
	return nil, "", last
}

// SOCKSError is a connection the SOCKS proxy could not make. Its text is
// meant for the app and the audit log (session.end's error); it holds no
// credentials.
type SOCKSError struct {
	Proxy  string // the proxy, as socks5h://IP:PORT
	Target string // what the proxy was asked for
	// Reply is the proxy's SOCKS5 reply code (RFC 1928 §6; Tor's extended
	// codes 0xF0-0xF7), or 0 when the failure came before a reply.
	Reply int
	Msg   string
	Err   error
}

func (e *SOCKSError) Error() string {
	if e.Reply != 0 {
		return fmt.Sprintf("the SOCKS proxy %s could not connect to %s: %s (SOCKS reply %d)", e.Proxy, e.Target, e.Msg, e.Reply)
	}
	return fmt.Sprintf("SOCKS proxy %s, connecting to %s: %s", e.Proxy, e.Target, e.Msg)
}

func (e *SOCKSError) Unwrap() error { return e.Err }

// socksReplies are the texts of the SOCKS5 reply codes, as
// golang.org/x/net/internal/socks spells them (Reply.String), and what each
// means for a mail app. Tor's extended codes (ExtendedErrors, for onion
// services) come as "unknown code: N".
var socksReplies = []struct {
	code int
	lib  string
	say  string
}{
	{1, "general SOCKS server failure", "general failure of the proxy (Tor: the circuit or the stream failed; try again)"},
	{2, "connection not allowed by ruleset", "the proxy's rules do not allow this connection"},
	{3, "network unreachable", "network unreachable from the proxy"},
	{4, "host unreachable", "host unreachable from the proxy (Tor: the name did not resolve or the onion service is not reachable)"},
	{5, "connection refused", "the provider refused the connection"},
	{6, "TTL expired", "the connection timed out at the proxy (TTL expired)"},
	{7, "command not supported", "the proxy does not support CONNECT"},
	{8, "address type not supported", "the proxy cannot connect to this kind of address (a socks5:// proxy that cannot resolve names needs an IP, or socks5h:// is needed)"},
	{0xF0, "", "Tor: the onion service descriptor cannot be found"},
	{0xF1, "", "Tor: the onion service descriptor is invalid"},
	{0xF2, "", "Tor: the onion service's introduction failed"},
	{0xF3, "", "Tor: the onion service's rendezvous failed"},
	{0xF4, "", "Tor: the onion service needs client authorization"},
	{0xF5, "", "Tor: the onion service refused the client authorization"},
	{0xF6, "", "Tor: the onion address is invalid"},
	{0xF7, "", "Tor: the onion service's introduction timed out"},
}

// socksError turns an error of x/net/proxy's SOCKS5 dialer into a
// *SOCKSError with a clear text.
//
// x/net/proxy exposes no error types: the dialer returns a *net.OpError
// (Op "socks connect") around a plain errors.New, and a failure reply is
// "unknown error " + the unexported socks.Reply's String(). The reply
// code, the authentication refusals and the protocol errors are therefore
// recognized by those strings (x/net v0.62.0, internal/socks). Should the
// library change its wording, an error still comes out as a SOCKSError,
// with Reply 0 and the library's own text.
func socksError(v *policy.Via, target string, err error) *SOCKSError {
	se := &SOCKSError{Proxy: v.String(), Target: target, Err: err}
	inner := err
	var op *net.OpError
	if errors.As(err, &op) && strings.HasPrefix(op.Op, "socks") && op.Err != nil {
		inner = op.Err
	}
	var ne net.Error
	var iop *net.OpError
	msg := inner.Error()
	switch {
	case errors.Is(inner, context.DeadlineExceeded) || errors.As(inner, &ne) && ne.Timeout():
		se.Msg = "no answer in time (the proxy or the provider is slow or unreachable)"
	case errors.As(inner, &iop) && iop.Op == "dial":
		se.Msg = "cannot connect to the proxy; is it (Tor) running? (" + iop.Err.Error() + ")"
	case strings.HasPrefix(msg, "unknown error "):
		reply := strings.TrimPrefix(msg, "unknown error ")
		se.Msg = "the proxy answered: " + reply
		for _, r := range socksReplies {
			if r.lib != "" && reply == r.lib {
				se.Reply, se.Msg = r.code, r.say
			}
		}
		if n, ok := strings.CutPrefix(reply, "unknown code: "); ok {
			if c, err := strconv.Atoi(n); err == nil && c > 0 && c < 256 {
				se.Reply = c
				for _, r := range socksReplies {
					if r.code == c {
						se.Msg = r.say
					}
				}
			}
		}
	case msg == "username/password authentication failed":
		se.Msg = "the proxy refused the SOCKS username and password"
	case msg == "no acceptable authentication methods":
		se.Msg = "the proxy wants a way of authenticating that mailproxy was not configured for (via_user and via_password?)"
	case msg == "invalid username/password":
		se.Msg = "the SOCKS username or password is empty or longer than 255 bytes"
	case strings.HasPrefix(msg, "unexpected protocol version"):
		se.Msg = "the proxy does not speak SOCKS5 (" + msg + ")"
	default:
		se.Msg = msg
	}
	return se
}
