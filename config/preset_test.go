package config

import (
	"crypto/tls"
	"strings"
	"testing"

	"mailproxy/policy"
)

const presetNamed = `[[provider]]
name = "fastmail"
via = "socks5h://127.0.0.1:9050"
isolate = true
pins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
min_tls = "1.3"
tofu = false
domains = ["example.org"]
scrub_headers = []

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "fastmail"
`

// TestPresetNamedProviderKeepsItsSettings: a [[provider]] named like a
// preset, without hosts or endpoints, takes the preset's hosts and
// endpoints and keeps everything else it says: its proxy (so it is never
// reached directly), pins, TLS floor, trust-on-first-use setting, domains
// and header scrubbing.
func TestPresetNamedProviderKeepsItsSettings(t *testing.T) {
	c, err := Parse("m.toml", []byte(presetNamed))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Provider("fastmail")
	if p == nil || len(p.Endpoints) != 3 || !p.Allows("imap.fastmail.com") || p.Endpoints[policy.IMAP].Host != "imap.fastmail.com" {
		t.Fatalf("not the preset's hosts and endpoints: %+v", p)
	}
	if p.Via == nil || p.Via.Addr.String() != "127.0.0.1:9050" || !p.Via.RemoteDNS || !p.Via.Isolate {
		t.Errorf("via dropped: %+v", p.Via)
	}
	if len(p.TLS.Pins) != 1 || p.TLS.MinVersion != tls.VersionTLS13 || !p.TLS.NoTOFU {
		t.Errorf("TLS settings dropped: %+v", p.TLS)
	}
	if len(p.Domains) != 1 || p.Domains[0] != "example.org" || len(p.ScrubHeaders) != 0 {
		t.Errorf("domains %v, scrub_headers %v", p.Domains, p.ScrubHeaders)
	}
	// The preset itself is left as it was.
	pc, err := Preset("fastmail")
	if err != nil {
		t.Fatal(err)
	}
	if q := pc.Providers[0]; q.Via != nil || len(q.TLS.Pins) != 0 || q.TLS.MinVersion != tls.VersionTLS12 || q.Domains[0] != "fastmail.com" {
		t.Errorf("the preset changed: %+v", q)
	}
}

// TestPresetNamedProviderChecked: what a preset-named provider says is
// checked like any provider's, with its line.
func TestPresetNamedProviderChecked(t *testing.T) {
	for _, c := range []struct{ from, to, want string }{
		{`min_tls = "1.3"`, `min_tls = "0.9"`, `m.toml:6: min_tls (provider "fastmail"): `},
		{`pins = ["sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]`, `pins = ["sha256/garbage"]`, `m.toml:5: pins (provider "fastmail"): `},
		{`via = "socks5h://127.0.0.1:9050"`, `via = "socks5h://192.0.2.1:9050"`, `m.toml:3: via (provider "fastmail"): `},
		{`domains = ["example.org"]`, `domains = ["bad domain"]`, `m.toml:8: domains (provider "fastmail"): "bad domain" is not a domain name`},
		{`tofu = false`, `ca_file = "/nonexistent/ca.pem"`, `m.toml:7: ca_file (provider "fastmail"): "/nonexistent/ca.pem"`},
	} {
		f := strings.Replace(presetNamed, c.from, c.to, 1)
		if f == presetNamed {
			t.Fatalf("%s is not in the file", c.from)
		}
		_, err := Parse("m.toml", []byte(f))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.to, err, c.want)
		}
	}
}

// TestPresetOAuth2Filled: a preset-named provider's oauth2 table takes the
// preset's endpoints and scopes it leaves out, and keeps those it gives.
func TestPresetOAuth2Filled(t *testing.T) {
	c, err := Parse("m.toml", []byte(`[[provider]]
name = "outlook"
[provider.oauth2]
client_id = "abc"
scopes = ["https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"]

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "outlook"
`))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Provider("outlook").OAuth2
	if o == nil || o.ClientID != "abc" || len(o.Scopes) != 2 || o.TokenURL != "https://login.microsoftonline.com/common/oauth2/v2.0/token" || o.DeviceAuthURL == "" {
		t.Fatalf("%+v", o)
	}
}
