package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Via is a provider's SOCKS5 proxy (RFC 1928), such as Tor's: every
// connection for the provider goes through it, and mailproxy connects to
// nothing else for that provider.
type Via struct {
	// Addr is the proxy: an IP address and port. It is a loopback address
	// unless AllowRemote is set.
	Addr netip.AddrPort
	// RemoteDNS (scheme socks5h) sends the host name to the proxy, which
	// resolves it: mailproxy makes no DNS lookup for the provider. Without
	// it (socks5) mailproxy resolves the name itself, checks every address
	// as on a direct connection, and asks the proxy for an address.
	RemoteDNS bool
	// User and Password are fixed SOCKS credentials (RFC 1929), if any.
	// Password is a secret: it is never written to a log.
	User, Password string
	// Isolate gives each account its own SOCKS credentials, derived from
	// the account and a key that lives as long as the process, so that
	// Tor (IsolateSOCKSAuth, on by default) puts accounts on different
	// circuits. It excludes User and Password.
	Isolate bool
	// AllowRemote accepts a proxy that is not on this machine.
	AllowRemote bool
}

// ParseVia parses "socks5h://127.0.0.1:9050" or "socks5://[::1]:1080". The
// host must be an IP address ("localhost" stands for 127.0.0.1): a proxy
// named by a DNS name would need a lookup that the proxy is there to avoid.
func ParseVia(raw string) (*Via, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" {
		return nil, fmt.Errorf("%q is not a proxy URL like socks5h://127.0.0.1:9050", RedactURL(raw))
	}
	v := &Via{}
	switch u.Scheme {
	case "socks5h":
		v.RemoteDNS = true
	case "socks5":
	default:
		return nil, fmt.Errorf("%q: unknown scheme %q (want socks5h, where the proxy resolves names, or socks5)", RedactURL(raw), u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q: put SOCKS credentials in via_user and via_password, not in the URL", RedactURL(raw))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: a proxy is scheme://address:port and nothing else", RedactURL(raw))
	}
	host := u.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("%q: the proxy must be an IP address, like 127.0.0.1", RedactURL(raw))
	}
	n, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("%q: the proxy needs a port, like :9050 for Tor", RedactURL(raw))
	}
	v.Addr = netip.AddrPortFrom(ip.Unmap(), uint16(n))
	return v, nil
}

// String is the proxy as a URL, without credentials: what the audit log
// and messages show.
func (v *Via) String() string {
	s := "socks5"
	if v.RemoteDNS {
		s = "socks5h"
	}
	return s + "://" + v.Addr.String()
}

// IsOnion reports whether host is a Tor onion service name, which only a
// proxy that resolves names (socks5h through Tor) can reach.
func IsOnion(host string) bool {
	return strings.HasSuffix(NormalizeHost(host), ".onion")
}
