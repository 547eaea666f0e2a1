package policy

import "strings"

// Login is what a login name says about where it should go.
//
// The forms understood are "user", "user@domain", "user@domain@host" and
// "user#host" (also "user@domain#host"). A '%' is part of the account name,
// never a route: Runbox, for one, names hosted-domain accounts
// "username%yourdomain.com".
type Login struct {
	// User is the login to send to the provider: the input without the
	// host part.
	User string
	// Domain is the part after the last '@' of User, if any.
	Domain string
	// Host is the server the login names, if any.
	Host string
}

// ParseLogin splits a login name into user, domain and named host.
func ParseLogin(s string) Login {
	var l Login
	name := s
	if i := strings.LastIndexByte(s, '#'); i >= 0 {
		name, l.Host = s[:i], s[i+1:]
	} else if strings.Count(s, "@") >= 2 {
		i := strings.LastIndexByte(s, '@')
		name, l.Host = s[:i], s[i+1:]
	}
	l.User = name
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		l.Domain = NormalizeHost(name[i+1:])
	}
	l.Host = NormalizeHost(l.Host)
	return l
}

// Route is where a login goes.
type Route struct {
	Provider *Provider
	// Endpoint is the provider's endpoint for the protocol; its Host is the
	// host the login named, when it named an allowed one.
	Endpoint Endpoint
	// User is the login name to present to the provider.
	User string
}

// RouteLogin decides which provider and endpoint a login goes to.
//
// fixed is the listener's provider, or nil on a listener whose provider is
// "*", where the login's domain picks one of providers (or, for a login
// with no domain that names a host, the provider whose allowlist holds that
// host). A login that names a host outside the chosen provider's allowlist,
// a domain no provider serves, or no domain at all on a "*" listener is
// refused with reason non_provider_host.
func RouteLogin(providers []*Provider, fixed *Provider, proto Proto, login string) (Route, error) {
	l := ParseLogin(login)
	p := fixed
	if p == nil {
		switch {
		case l.Domain != "":
			for _, c := range providers {
				if c.Serves(l.Domain) {
					p = c
					break
				}
			}
			if p == nil {
				return Route{}, Deny(ReasonNonProviderHost, l.Domain,
					"no configured provider serves the login domain %q", l.Domain)
			}
		case l.Host != "":
			for _, c := range providers {
				if c.Allows(l.Host) {
					p = c
					break
				}
			}
			if p == nil {
				return Route{}, Deny(ReasonNonProviderHost, l.Host,
					"the login names server %q, which no configured provider lists in its hosts", l.Host)
			}
		default:
			return Route{}, Deny(ReasonNonProviderHost, "",
				"no provider for this login: it has no @domain to choose a provider by (use user@domain, or a listener with a fixed provider)")
		}
	}
	ep, ok := p.Endpoint(proto)
	if !ok {
		return Route{}, Deny(ReasonNonProviderHost, l.Domain,
			"provider %q has no %s endpoint", p.Name, proto)
	}
	if l.Host != "" {
		if !p.Allows(l.Host) {
			return Route{}, Deny(ReasonNonProviderHost, l.Host,
				"the login names server %q, which is not in provider %q's hosts", l.Host, p.Name)
		}
		ep.Host = l.Host
	}
	return Route{Provider: p, Endpoint: ep, User: l.User}, nil
}
