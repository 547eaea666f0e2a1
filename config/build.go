package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// build checks a decoded file and turns it into a Config.
func (d *doc) build(f *File) (*Config, Errors) {
	var errs Errors
	add := func(e *Error) { errs = append(errs, e) }
	c := &Config{AuditPath: "stderr", Limits: proxy.DefaultLimits}

	if f.Log.Audit != "" {
		c.AuditPath = d.path(f.Log.Audit)
		if f.Log.Audit == "stderr" || f.Log.Audit == "stdout" {
			c.AuditPath = f.Log.Audit
		}
	}
	if f.Log.Level != "" {
		lvl, err := policy.ParseLevel(f.Log.Level)
		if err != nil {
			add(d.at("log.level", "level", "%q is not a level (want debug, info, warn or error)", f.Log.Level))
		}
		c.Level = lvl
	}
	d.limits(&f.Limits, &c.Limits, add)
	c.Status = d.status(&f.Status, add)

	names := map[string]bool{}
	for i := range f.Provider {
		pe := &f.Provider[i]
		p := d.provider(i, pe, add)
		if p == nil {
			// Its listeners say nothing more about it (no follow-on
			// errors): its own errors are reported.
			d.failed = append(d.failed, pe.Name)
			continue
		}
		if names[p.Name] {
			add(d.at(fmt.Sprintf("provider.%d.name", i), "name", "provider %q is defined twice", p.Name))
		}
		names[p.Name] = true
		c.Providers = append(c.Providers, p)
	}

	addrs := map[string]bool{}
	for i := range f.Listen {
		l := d.listener(i, &f.Listen[i], c, add)
		if l == nil {
			continue
		}
		if addrs[l.Address] {
			add(d.at(fmt.Sprintf("listen.%d.address", i), "address", "%s is used by two listeners", l.Address))
		}
		addrs[l.Address] = true
		c.Listeners = append(c.Listeners, l)
	}
	if c.Status != nil && addrs[c.Status.Address] {
		add(d.at("status.address", "address (status)", "%s is also a listener's address", c.Status.Address))
	}
	if len(f.Listen) == 0 && len(errs) == 0 {
		add(&Error{File: d.file, Msg: "no [[listen]] entries: add one, e.g. protocol = \"imap\", address = \"127.0.0.1:1143\", provider = \"...\""})
	}
	return c, errs
}

// path resolves a path relative to the configuration file's folder.
func (d *doc) path(p string) string {
	if p == "" || filepath.IsAbs(p) || !filepath.IsAbs(d.file) && filepath.Dir(d.file) == "." {
		return p
	}
	return filepath.Join(filepath.Dir(d.file), p)
}

func (d *doc) limits(le *LimitsEntry, l *proxy.Limits, add func(*Error)) {
	durs := []struct {
		key string
		val string
		dst *time.Duration
	}{
		{"preauth_timeout", le.PreauthTimeout, &l.PreauthTimeout},
		{"idle_timeout", le.IdleTimeout, &l.IdleTimeout},
		{"command_timeout", le.CommandTimeout, &l.CommandTimeout},
		{"dial_timeout", le.DialTimeout, &l.DialTimeout},
	}
	for _, x := range durs {
		v, err := parseDuration(x.val, *x.dst)
		if err != nil {
			add(d.at("limits."+x.key, x.key, "%v", err))
			continue
		}
		*x.dst = v
	}
	if l.IdleTimeout < 30*time.Minute {
		add(d.at("limits.idle_timeout", "idle_timeout", "%q is too short: IMAP clients IDLE for up to 29 minutes, so at least \"30m\"", le.IdleTimeout))
	}
	ints := []struct {
		key      string
		val      int64
		min, max int64
		dst      func(int64)
	}{
		{"max_sessions", int64(le.MaxSessions), 1, 100000, func(v int64) { l.MaxSessions = int(v) }},
		{"max_sessions_per_client", int64(le.MaxPerClient), 1, 100000, func(v int64) { l.MaxSessionsPerClient = int(v) }},
		{"sessions_per_minute_per_client", int64(le.RatePerClient), 1, 1000000, func(v int64) { l.SessionsPerMinutePerClient = int(v) }},
		{"max_line", int64(le.MaxLine), 1024, 1 << 20, func(v int64) { l.MaxLine = int(v) }},
		{"max_literal", int64(le.MaxLiteral), 1024, 16 << 20, func(v int64) { l.MaxLiteral = int(v) }},
		{"max_prelogin", int64(le.MaxPrelogin), 4096, 16 << 20, func(v int64) { l.MaxPrelogin = int(v) }},
		{"max_message_size", le.MaxMessageSize, 1024, 1 << 40, func(v int64) { l.MaxMessageSize = v }},
		{"max_recipients", int64(le.MaxRecipients), 1, 100000, func(v int64) { l.MaxRecipients = int(v) }},
		{"max_header_block", int64(le.MaxHeaderBlock), 4096, 16 << 20, func(v int64) { l.MaxHeaderBlock = int(v) }},
	}
	for _, x := range ints {
		if x.val == 0 {
			continue
		}
		if x.val < x.min || x.val > x.max {
			add(d.at("limits."+x.key, x.key, "%d is outside %d..%d", x.val, x.min, x.max))
			continue
		}
		x.dst(x.val)
	}
}

func (d *doc) provider(i int, pe *ProviderEntry, add func(*Error)) *policy.Provider {
	fromPreset(pe)
	base := fmt.Sprintf("provider.%d", i)
	who := fmt.Sprintf("provider #%d", i+1)
	if pe.Name != "" {
		who = fmt.Sprintf("provider %q", pe.Name)
	}
	key := func(k string) (string, string) { return base + "." + k, k + " (" + who + ")" }
	bad := func(k, format string, args ...any) {
		path, disp := key(k)
		add(d.at(path, disp, format, args...))
	}
	ok := true
	fail := func(k, format string, args ...any) { ok = false; bad(k, format, args...) }

	p := &policy.Provider{Name: pe.Name, Domains: pe.Domains,
		AllowPrivateAddresses: pe.AllowPrivateAddresses, Endpoints: map[policy.Proto]policy.Endpoint{}}
	switch pe.Name {
	case "":
		fail("name", "every provider needs a name")
	case "*":
		fail("name", "\"*\" is reserved for listeners that route by login domain")
	}
	if len(pe.Hosts) == 0 {
		fail("hosts", "hosts is required: the allowlist of host names mailproxy may connect to for this provider")
	}
	for _, h := range pe.Hosts {
		if err := policy.ValidHostPattern(h); err != nil {
			fail("hosts", "%v", err)
			continue
		}
		p.Hosts = append(p.Hosts, policy.NormalizeHost(h))
	}
	for _, dom := range pe.Domains {
		if err := policy.ValidHostPattern(dom); err != nil || dom[0] == '*' {
			fail("domains", "%q is not a domain name", dom)
		}
	}
	for _, proto := range policy.Protos {
		raw := pe.endpoint(proto)
		if raw == "" {
			continue
		}
		ep, err := policy.ParseEndpoint(raw)
		if err != nil {
			fail(string(proto), "%v", err)
			continue
		}
		if ep.Proto != proto {
			fail(string(proto), "%q is a %s endpoint, not %s", raw, ep.Proto, proto)
			continue
		}
		p.Endpoints[proto] = ep
	}
	if len(p.Endpoints) == 0 && pe.IMAP == "" && pe.POP3 == "" && pe.SMTP == "" {
		fail("imap", "a provider needs at least one endpoint: imap, pop3 or smtp")
	}
	if !d.privacy(pe, p, fail) {
		ok = false
	}
	if !d.oauth2(pe.OAuth2, p, base, who, add) {
		ok = false
	}
	if err := p.CheckEndpoints(); err != nil && ok {
		var dn = err.(*policy.Denied)
		for _, proto := range policy.Protos {
			if e, has := p.Endpoints[proto]; has && e.Host == dn.Host {
				path, disp := key(string(proto))
				e := d.at(path, disp, "endpoint host %s is not in hosts %v: mailproxy connects only to listed hosts", dn.Host, pe.Hosts)
				e.Err = err
				add(e)
				ok = false
				break
			}
		}
	}
	// The TLS requirement is parsed, and ca_file read, here and only here:
	// the dialer reads and parses nothing. A reload parses it afresh.
	t := &p.TLS
	t.MinVersion, t.MaxVersion = tls.VersionTLS12, tls.VersionTLS13
	window := true // both ends valid: worth comparing
	if pe.MinTLS != "" {
		v, err := policy.ParseTLSVersion(pe.MinTLS)
		if err != nil {
			fail("min_tls", "%v", err)
			window = false
		}
		t.MinVersion = v
	}
	if pe.MaxTLS != "" {
		v, err := policy.ParseTLSVersion(pe.MaxTLS)
		switch {
		case err != nil:
			fail("max_tls", "%v", err)
			window = false
		case v < tls.VersionTLS12:
			fail("max_tls", "%q: max_tls may only be \"1.2\" or \"1.3\" (a ceiling below TLS 1.2 is never needed)", pe.MaxTLS)
			window = false
		}
		t.MaxVersion = v
	}
	if window && t.MinVersion > t.MaxVersion {
		fail("min_tls", "min_tls %q is above max_tls %q", pe.MinTLS, pe.MaxTLS)
	}
	if pe.CAFile != "" {
		pool, err := tlsconf.LoadRoots(d.path(pe.CAFile))
		if err != nil {
			fail("ca_file", "%q: %v", pe.CAFile, err)
		}
		t.Roots = pool
	}
	t.NoTOFU = pe.TOFU != nil && !*pe.TOFU
	for _, pin := range pe.Pins {
		h, err := tlsconf.ParsePin(pin)
		if err != nil {
			fail("pins", "%v", err)
			continue
		}
		t.Pins = append(t.Pins, h)
	}
	if ok {
		// The dialer checks the window again at every dial; a configuration
		// that loads must never fail that check.
		if _, err := tlsconf.ProfileFor(p); err != nil {
			fail("min_tls", "%v", err)
		}
	}
	if !ok {
		return nil
	}
	return p
}

func (d *doc) listener(i int, le *ListenEntry, c *Config, add func(*Error)) *proxy.ListenSpec {
	base := fmt.Sprintf("listen.%d", i)
	who := fmt.Sprintf("listen #%d", i+1)
	if le.Address != "" {
		who = "listen " + le.Address
	}
	ok := true
	fail := func(k, format string, args ...any) {
		ok = false
		add(d.at(base+"."+k, k+" ("+who+")", format, args...))
	}
	l := &proxy.ListenSpec{LocalSecurity: proxy.LocalNone, Access: policy.Access{AllowPlaintextAuth: le.AllowPlaintextAuth},
		MaxSessions: c.Limits.MaxSessions, LocalCert: d.path(le.LocalCert), LocalKey: d.path(le.LocalKey)}
	proto, err := policy.ParseProto(le.Protocol)
	if err != nil {
		fail("protocol", "%v", err)
	}
	l.Proto = proto
	var clients policy.Access
	l.Address, clients = localAccess(le.Address, le.AllowClients, "127.0.0.1:1143", true, "a LAN listener needs allow_clients (CIDRs of the machines that may use it)", fail)
	l.Access.Loopback, l.Access.AllowClients = clients.Loopback, clients.AllowClients
	switch proxy.LocalSecurity(le.LocalSecurity) {
	case "", proxy.LocalNone:
	case proxy.LocalSTARTTLS, proxy.LocalTLS:
		l.LocalSecurity = proxy.LocalSecurity(le.LocalSecurity)
	default:
		fail("local_security", "%q is not one of none, starttls, tls", le.LocalSecurity)
	}
	if (le.LocalCert == "") != (le.LocalKey == "") {
		fail("local_cert", "local_cert and local_key go together")
	} else if le.LocalCert != "" && (le.LocalSecurity == "" || le.LocalSecurity == string(proxy.LocalNone)) {
		// Without local TLS the certificate would be ignored, and the
		// listener left plaintext.
		fail("local_cert", "local_cert needs local_security = starttls or tls")
	}
	if le.MaxSessions < 0 || le.MaxSessions > 100000 {
		fail("max_sessions", "%d is outside 1..100000", le.MaxSessions)
	} else if le.MaxSessions > 0 {
		l.MaxSessions = le.MaxSessions
	}
	switch le.Provider {
	case "":
		fail("provider", "provider is required: a provider's name, or \"*\" to choose by the login's domain")
	case "*":
		if len(c.Providers) == 0 && len(d.failed) == 0 && !d.unknownTable {
			fail("provider", "\"*\" needs [[provider]] entries with domains to choose from")
		}
	default:
		p := c.Provider(le.Provider)
		if p == nil {
			if pc, err := Preset(le.Provider); err == nil {
				p = pc.Providers[0]
				c.Providers = append(c.Providers, p)
			}
		}
		if p == nil && (slices.Contains(d.failed, le.Provider) || d.unknownTable) {
			ok = false // its provider's errors are reported already
		} else if p == nil {
			fail("provider", "no provider named %q (define it in a [[provider]], or use a built-in: %v)", le.Provider, PresetNames())
		} else if _, has := p.Endpoint(proto); !has && proto != "" {
			fail("provider", "provider %q has no %s endpoint", p.Name, proto)
		}
		l.Provider = p
	}
	if !ok {
		return nil
	}
	return l
}

// localAccess reads a local address ("127.0.0.1:1143"; "localhost" is
// 127.0.0.1) and its allow_clients CIDRs, as a listener and the status
// page take them: a non-loopback address needs allow_clients (lanNeeds
// says why); with none, only this machine is admitted (Loopback). An
// address that does not parse is "", after fail.
func localAccess(raw string, allow []string, example string, portZero bool, lanNeeds string, fail func(k, format string, args ...any)) (string, policy.Access) {
	var addr string
	var a policy.Access
	host, port, err := net.SplitHostPort(raw)
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, ierr := netip.ParseAddr(host)
	n, perr := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		fail("address", "%q is not host:port, like %q", raw, example)
	case ierr != nil:
		fail("address", "%q: the host must be an IP address (127.0.0.1, ::1, or a LAN address)", raw)
	case perr != nil || (n == 0 && !portZero):
		fail("address", "%q: bad port", raw)
	default:
		addr = netip.AddrPortFrom(ip, uint16(n)).String()
	}
	for _, s := range allow {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			ip, ierr := netip.ParseAddr(s)
			if ierr != nil {
				fail("allow_clients", "%q is not a CIDR like 192.168.1.0/24", s)
				continue
			}
			pfx = netip.PrefixFrom(ip, ip.BitLen())
		}
		a.AllowClients = append(a.AllowClients, pfx.Masked())
	}
	a.Loopback = addr != "" && loopbackAddress(addr) && len(allow) == 0
	if addr != "" && !loopbackAddress(addr) && len(allow) == 0 {
		fail("address", "%s is not a loopback address: %s", raw, lanNeeds)
	}
	return addr, a
}
