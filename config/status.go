package config

import (
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
	st.Address, st.Access = localAccess(se.Address, se.AllowClients, "127.0.0.1:1180", false, "a status page on the LAN needs allow_clients (CIDRs of the machines that may read it)", fail)
	if !ok {
		return nil
	}
	return st
}
