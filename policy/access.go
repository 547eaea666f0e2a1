package policy

import "net/netip"

// Access says which apps may use a listener and how they may log in
// (guarantee 7: loopback by default). The zero value is the strictest:
// loopback clients only, and no password before TLS, as for a LAN
// listener.
type Access struct {
	// Loopback is true when the listener binds only a loopback address
	// and has no allow_clients: only this machine's apps can reach it.
	Loopback bool
	// AllowClients admits exactly the apps inside these prefixes. Empty
	// means loopback clients only.
	AllowClients []netip.Prefix
	// AllowPlaintextAuth lets a LAN listener take passwords without TLS.
	AllowPlaintextAuth bool
}

// Admits reports whether an app connecting from ip may use the listener.
func (a Access) Admits(ip netip.Addr) bool {
	ip = ip.Unmap()
	if len(a.AllowClients) == 0 {
		return ip.IsLoopback()
	}
	for _, p := range a.AllowClients {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// PlaintextAuth reports whether the app may send credentials on its
// connection: always under local TLS, and on a loopback-only listener;
// on a LAN listener only with allow_plaintext_auth.
func (a Access) PlaintextAuth(underTLS bool) bool {
	return underTLS || (a.Loopback && len(a.AllowClients) == 0) || a.AllowPlaintextAuth
}
