package policy

import (
	"net/netip"
)

// Address ranges that are never a public mail provider. Loopback, private
// (RFC 1918, RFC 4193), link-local and the unspecified address are tested
// with netip's own predicates; the rest are listed here.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network" (RFC 791)
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation (RFC 5737)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking (RFC 2544)
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64 (RFC 8215)
	netip.MustParsePrefix("100::/64"),        // discard-only (RFC 6666)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation (RFC 3849)
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
}

// Addresses that embed an IPv4 address; the embedded one is checked too.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052
	sixToFour = netip.MustParsePrefix("2002::/16")    // RFC 3056
)

// CheckAddr decides whether a resolved address may be dialled for a
// provider. Unspecified, multicast and broadcast addresses are never
// allowed. Loopback, private, link-local, CGNAT and other non-public
// addresses are refused (reason private_address) unless allowPrivate is set.
// host names what resolved to ip, for the refusal.
func CheckAddr(host string, ip netip.Addr, allowPrivate bool) error {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return Deny(ReasonPrivateAddress, host, "%s resolved to %v, which no connection may go to", host, ip)
	}
	if allowPrivate || isPublic(ip) {
		return nil
	}
	return Deny(ReasonPrivateAddress, host,
		"%s resolved to the non-public address %v (set allow_private_addresses = true for an on-premises provider)", host, ip)
}

func isPublic(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	if ip.Is6() && (nat64.Contains(ip) || sixToFour.Contains(ip)) {
		b := ip.As16()
		var v4 [4]byte
		if nat64.Contains(ip) {
			copy(v4[:], b[12:16])
		} else {
			copy(v4[:], b[2:6])
		}
		return isPublic(netip.AddrFrom4(v4))
	}
	// Beyond those, only global unicast is public in IPv6: the rest of
	// the space holds the deprecated IPv4-compatible (::a.b.c.d) and the
	// IPv4-translated (::ffff:0:a.b.c.d) forms, which a host with a
	// translator carries to the IPv4 address inside.
	if ip.Is6() && !globalUnicast.Contains(ip) {
		return false
	}
	return true
}

// globalUnicast is IPv6's global unicast space (RFC 4291 section 2.4).
var globalUnicast = netip.MustParsePrefix("2000::/3")
