package config

import (
	"mailproxy/policy"
)

// DefaultScrubHeaders are the header fields removed from sent mail when a
// provider does not say: they name the app, its version and often the
// operating system.
var DefaultScrubHeaders = []string{"User-Agent", "X-Mailer"}

// privacy checks a provider's SOCKS5 proxy (via, via_user, via_password,
// isolate, via_allow_remote) and scrub_headers, and sets them on p. It
// reports whether all was well.
func (d *doc) privacy(pe *ProviderEntry, p *policy.Provider, fail func(k, format string, args ...any)) bool {
	ok := true
	bad := func(k, format string, args ...any) { ok = false; fail(k, format, args...) }

	p.ScrubHeaders = DefaultScrubHeaders
	if pe.ScrubHeaders != nil {
		p.ScrubHeaders = nil
		for _, h := range *pe.ScrubHeaders {
			if !validFieldName(h) {
				bad("scrub_headers", "%q is not a header field name (printable ASCII without ':' or spaces, like \"X-Mailer\")", h)
				continue
			}
			p.ScrubHeaders = append(p.ScrubHeaders, h)
		}
	}

	if pe.Via == "" {
		for _, k := range []struct {
			key string
			set bool
		}{{"via_user", pe.ViaUser != ""}, {"via_password", pe.ViaPassword != ""},
			{"isolate", pe.Isolate}, {"via_allow_remote", pe.ViaAllowRemote}} {
			if k.set {
				bad(k.key, "%s needs via, the SOCKS5 proxy, like via = \"socks5h://127.0.0.1:9050\"", k.key)
			}
		}
	} else {
		v, err := policy.ParseVia(pe.Via)
		if err != nil {
			bad("via", "%v", err)
		} else {
			v.User, v.Password, v.Isolate, v.AllowRemote = pe.ViaUser, pe.ViaPassword, pe.Isolate, pe.ViaAllowRemote
			if !v.Addr.Addr().IsLoopback() && !v.AllowRemote {
				bad("via", "%s is not on this machine: set via_allow_remote = true to send this provider's traffic, and its host names, to a proxy elsewhere", v)
			}
			p.Via = v
		}
		switch {
		case pe.Isolate && (pe.ViaUser != "" || pe.ViaPassword != ""):
			bad("isolate", "isolate makes SOCKS credentials of its own for each account: leave via_user and via_password out")
		case pe.ViaPassword != "" && pe.ViaUser == "":
			bad("via_password", "via_password needs via_user")
		case len(pe.ViaUser) > 255 || len(pe.ViaPassword) > 255:
			bad("via_user", "SOCKS5 user names and passwords are at most 255 bytes")
		}
	}

	// An onion service is reachable only through Tor, which resolves its
	// name: a local lookup would fail and tell the DNS what was wanted.
	remote := p.Via != nil && p.Via.RemoteDNS
	for _, h := range p.Hosts {
		if policy.IsOnion(h) && !remote {
			bad("hosts", "%s is an onion service: it needs via = \"socks5h://127.0.0.1:9050\" (Tor, resolving the name)", h)
			break
		}
	}
	return ok
}

// validFieldName reports whether s is a header field name (RFC 5322 §3.6.8:
// printable US-ASCII but ':').
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}
