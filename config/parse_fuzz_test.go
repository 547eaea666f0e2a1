package config

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// fuzzName is the file name the fuzzed documents are parsed under; every
// error must start with it.
const fuzzName = "fuzz/mailproxy.toml"

func addConfigSeeds(f *testing.F) {
	for _, s := range []string{
		good,
		"[[provider]]\nname = \"x\"\nhosts = [\"mail.x.example\"]\nimaps = \"imaps://mail.x.example\"\n",
		"[[provider]]\nname = \"x\"\nhosts = [\"*.x.example\"]\nimap = \"imaps://evil.example\"\n[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1143\"\nprovider = \"x\"\n",
		"[[provider]]\nname = \"x\"\nhosts = [\"*.x.example\"]\nimap = \"imaps://mail.x.example\"\n[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1143\"\nprovider = \"x\"\n",
		"[[listen]]\nprotocol = \"smtp\"\naddress = \"localhost:1587\"\nprovider = \"runbox\"\n",
		"[[listen]]\nprotocol = \"pop3\"\naddress = \"[::1]:1110\"\nprovider = \"*\"\n",
		"[[listen]]\nprotocol = \"imap\"\naddress = \"192.168.1.5:1143\"\nprovider = \"fastmail\"\nallow_clients = [\"192.168.1.0/24\", \"10.0.0.1\"]\n",
		"[provider]\nname = 1\n",
		"[log]\nlevl = \"info\"\n[limits]\nmax_line = 1\nidle_timeout = \"1s\"\n",
		"[a.b.c]\nx.y = 1\n",
		"provider = 1\nlisten = []\n",
		"[[provider]]\nname = \"x\"\nhosts = [\"*\"]\ndomains = [\"*.x\", \"\"]\npins = [\"sha256/AAAA\"]\nmin_tls = \"1.3\"\nmax_tls = \"1.2\"\nimap = \"imaps://[fe80::1%25eth0]\"\n",
		"[[provider]]\nname = \"x\"\nhosts = [\"*.x.example\"]\nimap = \"imaps://a b.x.example\"\n",
		"x = \"\"\"\n",
		"[[listen]\n",
		"\xef\xbb\xbf[log]\r\nlevel = 'warn'\r\n",
		"a = { b = 1, c = [1, 2, {d = 3}] }\n",
		"[[provider]]\nname = \"gmail\"\noauth2 = { client_id = \"x\", client_secrt = 1, a.b = 2, scopes = { d = 3 } }\nvia = [\"socks5h://u:p@127.0.0.1:9050\"]\n",
		"[[listen]]\n[[listen]]\n[[listen]]\nprotocol = \"imap\"\n",
		oauthFile,
		"[provider.oauth2]\nclient_id = \"x\"\n[[provider]]\nname = \"outlook\"\n[provider.oauth2]\nclient_id = \"\"\nscope = 1\n",
		"",
	} {
		f.Add([]byte(s))
	}
}

// FuzzParse parses arbitrary documents as a configuration file. It must
// not panic; a refusal is Errors of *Error, each naming the file first
// (so a user knows where to look) and at a line that exists; and a
// document it accepts gives providers whose endpoints are all on their
// own hosts, and listeners that are loopback or have allow_clients, each
// with a provider serving its protocol (or "*", with providers to choose
// from).
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 60s ./config/
func FuzzParse(f *testing.F) {
	addConfigSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(fuzzName, data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse failed (%v) and returned a configuration", err)
			}
			checkErrors(t, err, data)
			return
		}
		if c.Path != fuzzName {
			t.Fatalf("Path = %q", c.Path)
		}
		for _, p := range c.Providers {
			if err := p.CheckEndpoints(); err != nil {
				t.Fatalf("accepted provider %q: %v", p.Name, err)
			}
			if len(p.Endpoints) == 0 || len(p.Hosts) == 0 || p.Name == "" || p.Name == "*" {
				t.Fatalf("accepted provider %+v", p)
			}
			for proto, e := range p.Endpoints {
				if e.Proto != proto || !p.Allows(e.Host) {
					t.Fatalf("accepted provider %q with endpoint %v outside %v", p.Name, e, p.Hosts)
				}
			}
		}
		if len(c.Listeners) == 0 {
			t.Fatalf("accepted a configuration without listeners")
		}
		for _, l := range c.Listeners {
			ap, perr := netip.ParseAddrPort(l.Address)
			if perr != nil {
				t.Fatalf("accepted listener address %q: %v", l.Address, perr)
			}
			if !ap.Addr().Unmap().IsLoopback() && len(l.Access.AllowClients) == 0 {
				t.Fatalf("accepted a LAN listener %s without allow_clients", l.Address)
			}
			if l.Access.Loopback && (len(l.Access.AllowClients) > 0 || !ap.Addr().IsLoopback()) {
				t.Fatalf("listener %s is marked loopback-only", l.Address)
			}
			switch l.LocalSecurity {
			case proxy.LocalNone, proxy.LocalSTARTTLS, proxy.LocalTLS:
			default:
				t.Fatalf("listener %s: local_security %q", l.Address, l.LocalSecurity)
			}
			if l.Provider == nil {
				if len(c.Providers) == 0 {
					t.Fatalf("listener %s routes by domain among no providers", l.Address)
				}
				continue
			}
			if !slices.Contains(c.Providers, l.Provider) {
				t.Fatalf("listener %s uses provider %q, which is not in the configuration", l.Address, l.Provider.Name)
			}
			if e, ok := l.Provider.Endpoint(l.Proto); !ok || !l.Provider.Allows(e.Host) {
				t.Fatalf("listener %s (%s) goes to %v of provider %q", l.Address, l.Proto, e, l.Provider.Name)
			}
		}
	})
}

// checkErrors: err is Errors (one or more *Error), each with the file
// name first and a line that the document has.
func checkErrors(t *testing.T, err error, data []byte) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("Parse failed with %T %v, not config.Errors", err, err)
	}
	var one *Error
	if !errors.As(err, &one) {
		t.Fatalf("errors.As(*Error) fails on %v", err)
	}
	lines := bytes.Count(data, []byte("\n")) + 1
	for _, e := range es {
		if e == nil || e.File != fuzzName || !strings.HasPrefix(e.Error(), fuzzName+":") || e.Msg == "" {
			t.Fatalf("error %#v does not name the file first", e)
		}
		if e.Line < 0 || e.Line > lines {
			t.Fatalf("error %q names line %d of a %d-line document", e.Error(), e.Line, lines)
		}
		if d := (*policy.Denied)(nil); errors.As(e, &d) && d.Reason != policy.ReasonNonProviderHost {
			t.Fatalf("error %q carries a refusal %v", e.Error(), d)
		}
	}
	if !strings.HasPrefix(err.Error(), fuzzName+":") {
		t.Fatalf("error text %q does not start with the file name", err)
	}
}

// FuzzIndex runs the key-line indexer alone on arbitrary documents: it
// must not panic, its errors name the file and an existing line, and
// every key position it records is a line of the document.
//
//	go test -run '^$' -fuzz '^FuzzIndex$' -fuzztime 60s ./config/
func FuzzIndex(f *testing.F) {
	addConfigSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, errs := index(fuzzName, data)
		if d == nil || d.file != fuzzName {
			t.Fatalf("index returned %+v", d)
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, e := range errs {
			if e.File != fuzzName || !strings.HasPrefix(e.Error(), fuzzName+":") || e.Line < 0 || e.Line > lines {
				t.Fatalf("index error %q (line %d of %d)", e.Error(), e.Line, lines)
			}
		}
		for k, l := range d.lines {
			if l < 1 || l > lines {
				t.Fatalf("index put %q at line %d of %d", k, l, lines)
			}
			if e := d.at(k+".x", "x", "m"); e.Line != l {
				t.Fatalf("at(%q) = line %d, want its table's %d", k+".x", e.Line, l)
			}
		}
	})
}
