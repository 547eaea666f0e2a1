package config

import (
	"net"
	"net/netip"
	"strconv"

	"mailproxy/policy"
)

// StatusEntry is the [status] table: the local status page and /metrics.
type StatusEntry struct {
	Address      string   `toml:"address"`       // e.g. "127.0.0.1:1180"; empty: no status page
	AllowClients []string `toml:"allow_clients"` // CIDRs; required for a non-loopback address
}

// Status is where the status page listens and who may read it. Like a
// listener, it is loopback only unless allow_clients says otherwise.
type Status struct {
	Address string // an IP address and port
	Access  policy.Access
}

func (d *doc) status(se *StatusEntry, add func(*Error)) *Status {
	if se.Address == "" {
		if len(se.AllowClients) > 0 {
			add(d.at("status.allow_clients", "allow_clients (status)", "allow_clients needs an address for the status page"))
		}
		return nil
	}
	ok := true
	fail := func(k, format string, args ...any) {
		ok = false
		add(d.at("status."+k, k+" (status)", format, args...))
	}
	st := &Status{}
	host, port, err := net.SplitHostPort(se.Address)
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, ierr := netip.ParseAddr(host)
	n, perr := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		fail("address", "%q is not host:port, like \"127.0.0.1:1180\"", se.Address)
	case ierr != nil:
		fail("address", "%q: the host must be an IP address (127.0.0.1, ::1, or a LAN address)", se.Address)
	case perr != nil || n == 0:
		fail("address", "%q: bad port", se.Address)
	default:
		st.Address = netip.AddrPortFrom(ip, uint16(n)).String()
	}
	for _, s := range se.AllowClients {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			ip, ierr := netip.ParseAddr(s)
			if ierr != nil {
				fail("allow_clients", "%q is not a CIDR like 192.168.1.0/24", s)
				continue
			}
			pfx = netip.PrefixFrom(ip, ip.BitLen())
		}
		st.Access.AllowClients = append(st.Access.AllowClients, pfx.Masked())
	}
	if st.Address != "" && !loopbackAddress(st.Address) && len(se.AllowClients) == 0 {
		fail("address", "%s is not a loopback address: a status page on the LAN needs allow_clients (CIDRs of the machines that may read it)", se.Address)
	}
	st.Access.Loopback = st.Address != "" && loopbackAddress(st.Address) && len(se.AllowClients) == 0
	if !ok {
		return nil
	}
	return st
}
