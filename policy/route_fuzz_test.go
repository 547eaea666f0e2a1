package policy

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzProviders are checked providers as a configuration would build
// them: wildcard and exact hosts, an IP literal, overlapping domains
// (a.example is served by both; the first wins), and protocols missing.
func fuzzProviders(tb testing.TB) []*Provider {
	ps := []*Provider{
		{Name: "a", Hosts: []string{"*.mx.a.example", "imap.a.example"}, Domains: []string{"a.example", "alias-a.example"},
			Endpoints: map[Proto]Endpoint{
				IMAP: {IMAP, ImplicitTLS, "imap.a.example", 993},
				SMTP: {SMTP, STARTTLS, "smtp.mx.a.example", 587},
			}},
		{Name: "b", Hosts: []string{"mail.b.example", "192.0.2.7", "2001:db8::7"}, Domains: []string{"b.example", "a.example"},
			Endpoints: map[Proto]Endpoint{
				IMAP: {IMAP, STARTTLS, "mail.b.example", 143},
				POP3: {POP3, ImplicitTLS, "192.0.2.7", 995},
				SMTP: {SMTP, ImplicitTLS, "2001:db8::7", 465},
			}},
		{Name: "runbox", Hosts: []string{"mail.runbox.com"}, Domains: []string{"runbox.com"},
			Endpoints: map[Proto]Endpoint{
				IMAP: {IMAP, ImplicitTLS, "mail.runbox.com", 993},
				POP3: {POP3, ImplicitTLS, "mail.runbox.com", 995},
			}},
	}
	for _, p := range ps {
		for _, h := range p.Hosts {
			if err := ValidHostPattern(h); err != nil {
				tb.Fatal(err)
			}
		}
		if err := p.CheckEndpoints(); err != nil {
			tb.Fatal(err)
		}
	}
	return ps
}

// onAllowlist is an independent reading of the allowlist: host is one of
// the exact patterns, or one valid label in front of a wildcard's domain.
func onAllowlist(p *Provider, host string) bool {
	for _, pat := range p.Hosts {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, ok := strings.CutSuffix(host, "."+rest)
			if ok && validLabel(label) {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// FuzzRouteLogin routes arbitrary login names on a fixed-provider
// listener and on a "*" listener, for each protocol, and checks:
//
//   - a route's endpoint host, as the dialer will normalise and dial it,
//     is a valid host name on the chosen provider's allowlist (read
//     independently of MatchHost), and normalising it again changes
//     nothing, so the name checked is the name dialled;
//
//   - on a fixed listener the route's provider is that provider; on "*"
//     it is the first provider serving the login's domain (or, without
//     a domain, allowing its named host);
//
//   - a host the login names is used or refused, never ignored, and the
//     endpoint is otherwise the provider's own;
//
//   - the user sent to the provider is the login up to its host part,
//     and keeps every '%' ('%' is part of an account name, never a
//     route): replacing them changes no routing decision;
//
//   - a refusal is a *Denied with reason non_provider_host and a detail.
//
//     go test -run '^$' -fuzz '^FuzzRouteLogin$' -fuzztime 60s ./policy/
func FuzzRouteLogin(f *testing.F) {
	for _, s := range []string{
		"alice",
		"alice@a.example",
		"alice@A.Example.",
		"alice@b.example",
		"bob@runbox.com",
		"alice%hosted.example@runbox.com",
		"alice%hosted.example",
		"alice@a.example#imap.a.example",
		"alice@a.example#pop.mx.a.example",
		"alice@a.example@evil.example",
		"alice#evil.example",
		"alice#x.y.mx.a.example",
		"alice#[2001:DB8::7]",
		"alice#192.0.2.7",
		"alice@a.example#evil@x.mx.a.example",
		"alice#[[[x.mx.a.example",
		"alice#*.mx.a.example",
		"alice#a%b.mx.a.example",
		"alice#x.mx.a.example..",
		"alice#MAIL.B.EXAMPLE. ",
		"@",
		"#",
		"@@",
		"a@b@c#d",
		"\x00@\xff#\x80.mx.a.example",
	} {
		for i := range 4 {
			f.Add(s, uint8(i), uint8(i))
		}
	}
	providers := fuzzProviders(f)
	f.Fuzz(func(t *testing.T, login string, protoSel, fixedSel uint8) {
		proto := Protos[int(protoSel)%len(Protos)]
		var fixed *Provider
		if n := int(fixedSel) % (len(providers) + 1); n > 0 {
			fixed = providers[n-1]
		}
		r, err := RouteLogin(providers, fixed, proto, login)
		l := ParseLogin(login)

		if strings.Contains(login, "%") && l.Host == "" {
			r2, err2 := RouteLogin(providers, fixed, proto, strings.ReplaceAll(login, "%", "q"))
			if (err == nil) != (err2 == nil) || r.Provider != r2.Provider || r.Endpoint != r2.Endpoint {
				t.Fatalf("a '%%' changed the route of %q: %v %v / %v %v", login, r.Endpoint, err, r2.Endpoint, err2)
			}
		}

		if err != nil {
			var d *Denied
			if !errors.As(err, &d) {
				t.Fatalf("RouteLogin(%q) refused with %T %v, not a *Denied", login, err, err)
			}
			if d.Reason != ReasonNonProviderHost || !errors.Is(err, ReasonNonProviderHost) || d.Detail == "" {
				t.Fatalf("RouteLogin(%q) refused with reason %q detail %q, want non_provider_host and a detail", login, d.Reason, d.Detail)
			}
			if r != (Route{}) {
				t.Fatalf("RouteLogin(%q) refused but returned a route %+v", login, r)
			}
			return
		}

		p := r.Provider
		switch {
		case p == nil:
			t.Fatalf("RouteLogin(%q) returned no provider and no error", login)
		case fixed != nil && p != fixed:
			t.Fatalf("RouteLogin(%q) on provider %s's listener chose %s", login, fixed.Name, p.Name)
		case fixed == nil && l.Domain != "" && p != firstOf(providers, func(c *Provider) bool { return c.Serves(l.Domain) }):
			t.Fatalf("RouteLogin(%q) chose %s, not the first provider serving %q", login, p.Name, l.Domain)
		case fixed == nil && l.Domain == "" && (l.Host == "" || p != firstOf(providers, func(c *Provider) bool { return c.Allows(l.Host) })):
			t.Fatalf("RouteLogin(%q) chose %s for a login without a domain", login, p.Name)
		}

		own, ok := p.Endpoint(proto)
		if !ok {
			t.Fatalf("RouteLogin(%q) routed %s to %s, which has no such endpoint", login, proto, p.Name)
		}
		if l.Host == "" && r.Endpoint != own {
			t.Fatalf("RouteLogin(%q) = endpoint %+v, want the provider's %+v", login, r.Endpoint, own)
		}
		if l.Host != "" && r.Endpoint.Host != l.Host {
			t.Fatalf("RouteLogin(%q) ignored the named host %q: endpoint %+v", login, l.Host, r.Endpoint)
		}
		if r.Endpoint.Proto != proto || r.Endpoint.Port != own.Port || r.Endpoint.Security != own.Security {
			t.Fatalf("RouteLogin(%q) = endpoint %+v, want proto, port and security of %+v", login, r.Endpoint, own)
		}

		dialled := NormalizeHost(r.Endpoint.Host) // what tlsconf.Dialer checks and dials
		if !validHostName(dialled) || NormalizeHost(dialled) != dialled {
			t.Fatalf("RouteLogin(%q) names host %q (dialled as %q), not a host name", login, r.Endpoint.Host, dialled)
		}
		if !p.Allows(dialled) || !onAllowlist(p, dialled) {
			t.Fatalf("RouteLogin(%q) names host %q, outside provider %s's hosts %v", login, dialled, p.Name, p.Hosts)
		}

		if r.User != l.User || !strings.HasPrefix(login, r.User) {
			t.Fatalf("RouteLogin(%q) sends user %q, not the login's name %q", login, r.User, l.User)
		}
		if rest := login[len(r.User):]; rest != "" && rest[0] != '#' && rest[0] != '@' {
			t.Fatalf("RouteLogin(%q) cut the user %q before %q, not at '#' or '@'", login, r.User, rest)
		}
		if strings.Count(r.User, "%") != strings.Count(login, "%") {
			t.Fatalf("RouteLogin(%q) sends user %q: a '%%' went elsewhere", login, r.User)
		}
	})
}

func firstOf(ps []*Provider, ok func(*Provider) bool) *Provider {
	for _, p := range ps {
		if ok(p) {
			return p
		}
	}
	return nil
}

// FuzzMatchHost checks the allowlist primitives on arbitrary patterns and
// hosts: NormalizeHost lower-cases and never grows a name; a valid
// pattern is normalised already (as the configuration stores it); and a
// host a valid pattern matches is a valid host name that normalising
// again leaves alone, which is one label longer than a wildcard's
// domain, or is the exact pattern.
//
//	go test -run '^$' -fuzz '^FuzzMatchHost$' -fuzztime 60s ./policy/
func FuzzMatchHost(f *testing.F) {
	for _, s := range [][2]string{
		{"*.example.com", "imap.example.com"},
		{"*.example.com", "IMAP.Example.COM."},
		{"*.example.com", "a.b.example.com"},
		{"*.example.com", "example.com"},
		{"*.example.com", ".example.com"},
		{"*.example.com", "a b.example.com"},
		{"*.example.com", "evil@x.example.com"},
		{"*.example.com", "*.example.com"},
		{"*.example.com", "[[x.example.com"},
		{"mail.example.com", "[mail.example.com]"},
		{"::1", "[::1]"},
		{"192.0.2.1", "192.0.2.1."},
		{"*.*.example.com", "a.b.example.com"},
		{"*", "x"},
		{"", ""},
		{"\xff.example.com", "\xff.example.com"},
		{"K.example.com", "\u212a.example.com"}, // KELVIN SIGN lower-cases to k
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		m := MatchHost(pattern, host)
		for _, s := range []string{pattern, host} {
			n := NormalizeHost(s)
			if utf8.ValidString(s) && n != strings.ToLower(n) {
				t.Fatalf("NormalizeHost(%q) = %q is not lower case", s, n)
			}
		}
		if ValidHostPattern(pattern) != nil {
			return
		}
		np := NormalizeHost(pattern)
		if ValidHostPattern(np) != nil || MatchHost(np, host) != m {
			t.Fatalf("pattern %q: its normal form %q does not behave the same", pattern, np)
		}
		if rest, ok := strings.CutPrefix(np, "*."); ok {
			if !MatchHost(pattern, "x."+rest) || MatchHost(pattern, rest) || MatchHost(pattern, "x.y."+rest) {
				t.Fatalf("wildcard %q does not match exactly one label", pattern)
			}
		} else if !MatchHost(pattern, np) {
			t.Fatalf("pattern %q does not match itself", pattern)
		}
		if !m {
			return
		}
		nh := NormalizeHost(host)
		if !validHostName(nh) || NormalizeHost(nh) != nh {
			t.Fatalf("MatchHost(%q, %q): the host, %q once normalised, is not a host name", pattern, host, nh)
		}
		if !onAllowlist(&Provider{Hosts: []string{np}}, nh) {
			t.Fatalf("MatchHost(%q, %q) matched a host outside the pattern", pattern, host)
		}
	})
}
