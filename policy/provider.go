package policy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Proto is a mail protocol mailproxy relays.
type Proto string

// The protocols.
const (
	IMAP Proto = "imap"
	POP3 Proto = "pop3"
	SMTP Proto = "smtp"
)

// Protos lists the protocols in a stable order.
var Protos = []Proto{IMAP, POP3, SMTP}

// ParseProto accepts "imap", "pop3" or "smtp".
func ParseProto(s string) (Proto, error) {
	switch p := Proto(s); p {
	case IMAP, POP3, SMTP:
		return p, nil
	}
	return "", fmt.Errorf("unknown protocol %q (want imap, pop3 or smtp)", s)
}

// Security says how a connection to the provider becomes TLS. There is no
// plaintext mode: a plain scheme means STARTTLS is required.
type Security int

const (
	// ImplicitTLS: TLS from the first byte (imaps, pop3s, smtps).
	ImplicitTLS Security = iota
	// STARTTLS: a plaintext greeting, then STARTTLS (or STLS) is required
	// before anything else; the connection fails closed without it.
	STARTTLS
)

func (s Security) String() string {
	if s == STARTTLS {
		return "starttls"
	}
	return "tls"
}

// Endpoint is one service of a provider: protocol, TLS mode, host and port.
type Endpoint struct {
	Proto    Proto
	Security Security
	Host     string // lower case, no trailing dot; an IP literal without brackets
	Port     uint16
}

var schemes = map[string]struct {
	proto Proto
	sec   Security
	port  uint16
}{
	"imaps": {IMAP, ImplicitTLS, 993},
	"imap":  {IMAP, STARTTLS, 143},
	"pop3s": {POP3, ImplicitTLS, 995},
	"pop3":  {POP3, STARTTLS, 110},
	"smtps": {SMTP, ImplicitTLS, 465},
	"smtp":  {SMTP, STARTTLS, 587},
}

// ParseEndpoint parses an endpoint URL such as "imaps://mail.example.com:993"
// or "smtp://mail.example.com:587". A plain scheme (imap, pop3, smtp) means
// STARTTLS is required. The port defaults to the scheme's usual one. Its
// errors show raw without a user name or password (RedactURL).
func ParseEndpoint(raw string) (Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" {
		return Endpoint{}, fmt.Errorf("%q is not an endpoint URL like imaps://mail.example.com:993", RedactURL(raw))
	}
	sch, ok := schemes[u.Scheme]
	if !ok {
		return Endpoint{}, fmt.Errorf("%q: unknown scheme %q (want imaps, imap, pop3s, pop3, smtps or smtp)", RedactURL(raw), u.Scheme)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return Endpoint{}, fmt.Errorf("%q: an endpoint is scheme://host:port and nothing else", RedactURL(raw))
	}
	host := NormalizeHost(u.Hostname())
	if !validHostName(host) {
		return Endpoint{}, fmt.Errorf("%q: %q is not a valid host name", RedactURL(raw), u.Hostname())
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() != "" {
		// A zone names an interface of this machine, not a provider; and
		// String could not write it back as the same URL.
		return Endpoint{}, fmt.Errorf("%q: an endpoint address cannot name a network interface (%%%s)", RedactURL(raw), a.Zone())
	}
	port := sch.port
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Endpoint{}, fmt.Errorf("%q: bad port %q", RedactURL(raw), p)
		}
		port = uint16(n)
	}
	return Endpoint{Proto: sch.proto, Security: sch.sec, Host: host, Port: port}, nil
}

// Scheme returns the URL scheme that describes e.
func (e Endpoint) Scheme() string {
	s := string(e.Proto)
	if e.Security == ImplicitTLS && e.Proto != HTTPS { // "https" says TLS already
		s += "s"
	}
	return s
}

// Addr returns "host:port" for dialling.
func (e Endpoint) Addr() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
}

// String returns the endpoint as a URL, e.g. "imaps://mail.example.com:993".
func (e Endpoint) String() string {
	if e.Host == "" {
		return ""
	}
	return e.Scheme() + "://" + e.Addr()
}

// NormalizeHost lower-cases a host name and drops a trailing dot and IPv6
// brackets, so that names compare equal however they were written.
func NormalizeHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, label := range strings.Split(h, ".") {
		if !validLabel(label) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ValidHostPattern reports whether p is a usable allowlist entry: a host
// name, an IP address, or "*." followed by a name with at least two labels.
func ValidHostPattern(p string) error {
	n := NormalizeHost(p)
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		if strings.Count(rest, ".") < 1 || !validHostName(rest) || strings.Contains(rest, "*") {
			return fmt.Errorf("%q: a wildcard must be \"*.\" followed by a domain of two or more labels, like *.example.com", p)
		}
		return nil
	}
	if !validHostName(n) {
		return fmt.Errorf("%q is not a valid host name or address", p)
	}
	return nil
}

// MatchHost reports whether host matches pattern. A pattern "*.example.com"
// matches exactly one label in place of the star ("mail.example.com", not
// "example.com" nor "a.b.example.com"); any other pattern matches itself.
// Comparison ignores case and a trailing dot.
func MatchHost(pattern, host string) bool {
	pattern, host = NormalizeHost(pattern), NormalizeHost(host)
	if host == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, parent, found := strings.Cut(host, ".")
		return found && validLabel(label) && parent == rest
	}
	return pattern == host
}

// Provider is a mail provider: where it may be reached, which login domains
// it serves, its endpoints and its TLS requirements.
type Provider struct {
	Name string
	// Hosts is the allowlist: every outbound connection for this provider
	// goes to a host matching one of these patterns.
	Hosts []string
	// Domains are the login domains this provider serves, used to route
	// logins on a listener whose provider is "*".
	Domains []string
	// Endpoints by protocol; a protocol the provider does not serve is
	// absent.
	Endpoints map[Proto]Endpoint
	// TLS is the provider's TLS requirement, parsed when the configuration
	// was loaded.
	TLS TLSPolicy
	// AllowPrivateAddresses lets the provider's names resolve to loopback
	// or private addresses (on-premises and test providers).
	AllowPrivateAddresses bool
	// Via is the SOCKS5 proxy every connection goes through; nil means
	// direct connections (via.go).
	Via *Via
	// ScrubHeaders are the header names removed from the top-level header
	// block of every message sent (SMTP); empty means none.
	ScrubHeaders []string
	// OAuth2, when set, makes every login an OAuth2 login (oauth2.go).
	OAuth2 *OAuth2
}

// TLSPolicy is a provider's TLS requirement in parsed form: the
// configuration's ca_file, pins, min_tls and max_tls, read and checked once
// when the configuration is loaded, so that nothing is parsed or read from
// disk when a connection is made. A configuration reload builds new values.
// The zero value is the default policy: TLS 1.2 to 1.3, system roots, no
// pins. Package tlsconf turns it into a *tls.Config and checks the window
// again at every dial.
type TLSPolicy struct {
	// MinVersion and MaxVersion bound the TLS version (tls.VersionTLS10
	// ...); zero means TLS 1.2 and TLS 1.3. Nothing below TLS 1.0 is ever
	// possible, and MaxVersion is TLS 1.2 or 1.3.
	MinVersion, MaxVersion uint16
	// Roots verifies the provider's certificate chain (from ca_file); nil
	// means the system roots.
	Roots *x509.CertPool
	// Pins are SHA-256 hashes of acceptable SubjectPublicKeyInfos; when
	// non-empty, the provider's certificate key must match one of them.
	Pins [][sha256.Size]byte
	// NoTOFU turns off trust on first use of the trust anchor for this
	// provider (tofu = false); the zero value keeps it on. Pins, when
	// set, take precedence over it.
	NoTOFU bool
}

// Allows reports whether host is on the provider's allowlist.
func (p *Provider) Allows(host string) bool {
	for _, pat := range p.Hosts {
		if MatchHost(pat, host) {
			return true
		}
	}
	return false
}

// Serves reports whether the provider serves login domain d.
func (p *Provider) Serves(domain string) bool {
	domain = NormalizeHost(domain)
	for _, d := range p.Domains {
		if NormalizeHost(d) == domain {
			return true
		}
	}
	return false
}

// Endpoint returns the provider's endpoint for proto.
func (p *Provider) Endpoint(proto Proto) (Endpoint, bool) {
	e, ok := p.Endpoints[proto]
	return e, ok
}

// CheckEndpoints returns a *Denied (reason non_provider_host) for the first
// endpoint whose host is outside the provider's allowlist.
func (p *Provider) CheckEndpoints() error {
	for _, proto := range Protos {
		if e, ok := p.Endpoints[proto]; ok && !p.Allows(e.Host) {
			return Deny(ReasonNonProviderHost, e.Host,
				"provider %q: %s endpoint host %s is not in its hosts %v", p.Name, proto, e.Host, p.Hosts)
		}
	}
	return nil
}

// TLS versions as written in the configuration ("1.2") and the audit log
// ("TLS1.2").
var tlsVersions = []struct {
	conf, audit string
	v           uint16
}{
	{"1.0", "TLS1.0", tls.VersionTLS10},
	{"1.1", "TLS1.1", tls.VersionTLS11},
	{"1.2", "TLS1.2", tls.VersionTLS12},
	{"1.3", "TLS1.3", tls.VersionTLS13},
}

// ParseTLSVersion parses "1.0", "1.1", "1.2" or "1.3".
func ParseTLSVersion(s string) (uint16, error) {
	for _, t := range tlsVersions {
		if s == t.conf {
			return t.v, nil
		}
	}
	return 0, fmt.Errorf("%q is not a TLS version (want \"1.0\", \"1.1\", \"1.2\" or \"1.3\"; SSLv3 is never allowed)", s)
}

// TLSVersionName spells a version as the audit log does: "TLS1.3". Anything
// else, SSLv3 included, is spelled as its hexadecimal code.
func TLSVersionName(v uint16) string {
	for _, t := range tlsVersions {
		if v == t.v {
			return t.audit
		}
	}
	if v == 0x0300 {
		return "SSLv3"
	}
	return fmt.Sprintf("0x%04x", v)
}
