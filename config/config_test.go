package config

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/policy"
	"mailproxy/proxy"
)

const good = `# a full configuration
[log]
audit = "audit.log"
level = "debug"

[limits]
preauth_timeout = "30s"
max_recipients = 50

[[provider]]
name = "example"
hosts = ["mail.example.com", "*.example.com"]
domains = ["example.com"]
imap = "imaps://mail.example.com:993"
pop3 = "pop3://pop.example.com"
smtp = "smtp://smtp.example.com:587"
pins = []
min_tls = "1.0"
max_tls = "1.2"

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "example"

[[listen]]
protocol = "smtp"
address = "192.168.1.10:1587"
provider = "*"
allow_clients = ["192.168.1.0/24", "10.0.0.7"]

[[listen]]
protocol = "pop3"
address = "[::1]:1110"
provider = "runbox"
`

func TestParseGood(t *testing.T) {
	c, err := Parse("/etc/mailproxy/mailproxy.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuditPath != "/etc/mailproxy/audit.log" || c.Level.String() != "DEBUG" {
		t.Errorf("log: %q %v", c.AuditPath, c.Level)
	}
	if c.Limits.PreauthTimeout != 30*time.Second || c.Limits.MaxRecipients != 50 || c.Limits.IdleTimeout != proxy.DefaultLimits.IdleTimeout {
		t.Errorf("limits: %+v", c.Limits)
	}
	p := c.Provider("example")
	if p == nil || p.TLS.MinVersion != tls.VersionTLS10 || p.TLS.MaxVersion != tls.VersionTLS12 || len(p.Endpoints) != 3 {
		t.Fatalf("provider: %+v", p)
	}
	if e := p.Endpoints[policy.POP3]; e.Security != policy.STARTTLS || e.Port != 110 {
		t.Errorf("pop3 endpoint %+v", e)
	}
	if len(c.Listeners) != 3 {
		t.Fatalf("%d listeners", len(c.Listeners))
	}
	if l := c.Listeners[1]; l.Provider != nil || len(l.Access.AllowClients) != 2 || l.Access.AllowClients[1].String() != "10.0.0.7/32" || l.Access.Loopback {
		t.Errorf("LAN listener %+v", l)
	}
	if l := c.Listeners[2]; l.Provider == nil || l.Provider.Name != "runbox" || l.Address != "[::1]:1110" {
		t.Errorf("preset listener %+v", l)
	}
}

// bad checks that doc fails with one message naming the file, the line, the
// key and containing want.
func bad(t *testing.T, doc string, line int, key, want string) error {
	t.Helper()
	_, err := Parse("test.toml", []byte(doc))
	if err == nil {
		t.Fatalf("accepted:\n%s", doc)
	}
	msg := err.Error()
	prefix := "test.toml:" + itoa(line) + ": "
	if line == 0 {
		prefix = "test.toml: "
	}
	if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, key) || !strings.Contains(msg, want) {
		t.Errorf("error %q, want it to start with %q and name %q and %q", msg, prefix, key, want)
	}
	return err
}

func itoa(i int) string { return strconv.Itoa(i) }

const provider = `[[provider]]
name = "p"
hosts = ["mail.example.com"]
imap = "imaps://mail.example.com"
`
const listener = `
[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "p"
`

func TestParseBad(t *testing.T) {
	// A typo'd key: named, with a suggestion.
	bad(t, strings.Replace(provider, "hosts", "hostz", 1)+listener, 3, "hostz", `did you mean "hosts"`)
	// An endpoint outside hosts: a config error that is also a refusal.
	err := bad(t, strings.Replace(provider, `imap = "imaps://mail.example.com"`, `imap = "imaps://imap.evil.test"`, 1)+listener,
		4, "imap", "not in hosts")
	var d *policy.Denied
	if !errors.As(err, &d) || d.Reason != policy.ReasonNonProviderHost || d.Host != "imap.evil.test" {
		t.Errorf("endpoint outside hosts: no non_provider_host refusal behind %v", err)
	}
	// A bad TLS version, and SSLv3.
	bad(t, provider+"min_tls = \"1.4\"\n"+listener, 5, "min_tls", `"1.4" is not a TLS version`)
	bad(t, provider+"min_tls = \"3.0\"\n"+listener, 5, "min_tls", "SSLv3 is never allowed")
	bad(t, provider+"max_tls = \"1.1\"\n"+listener, 5, "max_tls", `"1.2" or "1.3"`)
	// A LAN listener without allow_clients.
	bad(t, provider+strings.Replace(listener, "127.0.0.1", "192.168.1.5", 1), 8, "address", "allow_clients")
	bad(t, provider+strings.Replace(listener, "127.0.0.1", "0.0.0.0", 1), 8, "address", "allow_clients")
	// A wrong type.
	bad(t, strings.Replace(provider, `hosts = ["mail.example.com"]`, `hosts = "mail.example.com"`, 1)+listener, 3, "hosts", "")
	// Unknown table, syntax error, unknown provider, wrong scheme.
	bad(t, provider+listener+"[listenn]\n", 10, "[listenn]", "unknown table")
	bad(t, provider+"pins = [\n"+listener, 7, "", "syntax")
	bad(t, provider+strings.Replace(listener, `provider = "p"`, `provider = "q"`, 1), 9, "provider", `no provider named "q"`)
	bad(t, strings.Replace(provider, "imaps://", "pop3s://", 1)+listener, 4, "imap", "not imap")
	bad(t, provider+strings.Replace(listener, `"imap"`, `"pop3"`, 1), 9, "provider", "no pop3 endpoint")
	bad(t, provider+listener+"local_security = \"ssl\"\n", 10, "local_security", "none, starttls, tls")
	// A certificate for a listener without local TLS would be ignored, and
	// the listener plaintext.
	bad(t, provider+listener+"local_cert = \"c.pem\"\nlocal_key = \"k.pem\"\n", 10, "local_cert", "needs local_security = starttls or tls")
	bad(t, provider+listener+"local_security = \"none\"\nlocal_cert = \"c.pem\"\nlocal_key = \"k.pem\"\n", 11, "local_cert", "needs local_security = starttls or tls")
	bad(t, "[limits]\nidle_timeout = \"5m\"\n"+provider+listener, 2, "idle_timeout", "at least")
	bad(t, provider+"ca_file = \"missing.pem\"\n"+listener, 5, "ca_file", "missing.pem")
	bad(t, provider+"pins = [\"sha256/abc\"]\n"+listener, 5, "pins", "32 bytes")
	bad(t, provider, 0, "", "no [[listen]]")
	bad(t, "[provider]\nname = \"p\"\n", 1, "provider", "[[provider]]")
}

func TestAllErrorsReported(t *testing.T) {
	doc := strings.Replace(provider, "hosts", "hostz", 1) + strings.Replace(listener, "protocol", "protocl", 1)
	_, err := Parse("test.toml", []byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("want both typos reported, got %v", err)
	}
}

func TestCAFileRelative(t *testing.T) {
	dir := t.TempDir()
	ca, _ := certs.NewCA("x")
	if _, err := ca.WriteFile(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mailproxy.toml")
	os.WriteFile(path, []byte(provider+"ca_file = \"ca.pem\"\n"+listener), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// The roots are the file next to the configuration, loaded: that CA.
	if roots := c.Providers[0].TLS.Roots; roots == nil || !roots.Equal(ca.Pool()) {
		t.Errorf("ca_file %q did not resolve to %s", "ca.pem", filepath.Join(dir, "ca.pem"))
	}
}

func TestPresets(t *testing.T) {
	for _, name := range []string{"runbox", "fastmail", "posteo", "mailbox.org", "gmail", "outlook"} {
		c, err := Preset(name)
		if err != nil {
			t.Errorf("preset %s: %v", name, err)
			continue
		}
		p := c.Providers[0]
		if p.TLS.MinVersion != tls.VersionTLS12 || p.TLS.MaxVersion != tls.VersionTLS13 || p.AllowPrivateAddresses || p.TLS.Roots != nil || len(p.TLS.Pins) != 0 {
			t.Errorf("preset %s loosens the policy: %+v", name, p)
		}
		if len(c.Listeners) != 3 {
			t.Errorf("preset %s has %d listeners", name, len(c.Listeners))
		}
		for _, l := range c.Listeners {
			if !l.Access.Loopback || l.Address != DefaultListeners[string(l.Proto)] {
				t.Errorf("preset %s listener %s %s", name, l.Proto, l.Address)
			}
		}
	}
	if _, err := Preset("nosuch"); err == nil || !strings.Contains(err.Error(), "runbox") {
		t.Errorf("unknown preset: %v", err)
	}
}
