package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"mailproxy/config"
	"mailproxy/internal/testkit"
)

// TestHelp: every way of asking for help prints to stdout and exits 0:
// the overview lists every command of the table, and each command's help
// (help NAME, NAME -h, NAME --help) lists each of its flags.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		code, out, errOut := run(args...)
		if code != 0 || errOut != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
		for _, c := range commands() {
			if !strings.Contains(out, "mailproxy "+c.name+" ") {
				t.Errorf("%v does not list %q:\n%s", args, c.name, out)
			}
		}
	}
	for _, c := range commands() {
		first, _, _ := strings.Cut(c.name, " ")
		ways := [][]string{{"help", first}}
		if c.flags != nil {
			ways = append(ways, append(strings.Fields(c.name), "-h"), append(strings.Fields(c.name), "--help"), []string{first, "-h"})
		}
		for _, args := range ways {
			code, out, errOut := run(args...)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage: mailproxy "+c.name) {
				t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
				continue
			}
			if c.flags == nil {
				continue
			}
			c.flags().VisitAll(func(f *flag.Flag) {
				if !strings.Contains(out, "  -"+f.Name) {
					t.Errorf("%v does not show -%s:\n%s", args, f.Name, out)
				}
			})
		}
	}
	// A bad flag is a usage error, with the command's help on stderr.
	if code, out, errOut := run("check", "-frobnicate"); code != 2 || out != "" || !strings.Contains(errOut, "usage: mailproxy check") {
		t.Errorf("bad flag: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := run("help", "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("help for an unknown command: exit %d, %q", code, errOut)
	}
}

// TestREADMEDocumentsEveryFlag: the README shows each command, and each of
// its flags in that command's own synopsis line.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, c := range commands() {
		// The synopsis: a line starting "mailproxy NAME" in a code block.
		re := regexp.MustCompile(`(?m)^(?:go run \./cmd/)?mailproxy ` + regexp.QuoteMeta(c.name) + `\b.*$`)
		lines := re.FindAllString(readme, -1)
		if len(lines) == 0 {
			t.Errorf("README has no synopsis line for %q", c.name)
			continue
		}
		if c.flags == nil {
			continue
		}
		syn := strings.Join(lines, "\n")
		c.flags().VisitAll(func(f *flag.Flag) {
			if !regexp.MustCompile(`-` + regexp.QuoteMeta(f.Name) + `\b`).MatchString(syn) {
				t.Errorf("README's synopsis of %q lacks -%s:\n%s", c.name, f.Name, syn)
			}
		})
	}
}

// TestVersion: the version, the Go version and the modules linked in.
func TestVersion(t *testing.T) {
	code, out, _ := run("version")
	if code != 0 || !strings.HasPrefix(out, "mailproxy ") || !strings.Contains(out, "\n"+runtime.Version()+"\n") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
	for _, mod := range []string{"github.com/emersion/go-smtp v", "github.com/pelletier/go-toml/v2 v"} {
		if !strings.Contains(out, mod) {
			t.Errorf("version does not list %s:\n%s", mod, out)
		}
	}
}

// TestConfigErrorsAllAtOnce: config check prints every problem, each with
// file, line, key and value, and no Go type names.
func TestConfigErrorsAllAtOnce(t *testing.T) {
	doc := strings.Replace(goodConfig, `hosts = ["mail.example.com"]`, `hosts = "mail.example.com"`, 1) +
		"\n[[listen]]\nprotocol = \"pop3\"\naddress = \"127.0.0.1:99999\"\nprovider = \"example\"\nmax_sessions = \"many\"\n"
	path := writeFile(t, "bad.toml", doc)
	code, _, errOut := run("config", "check", "-config", path)
	for _, want := range []string{
		path + `:3: hosts (provider "example"): want a list of strings like ["a", "b"], not the string "mail.example.com"`,
		path + `:13: address (listen 127.0.0.1:99999): "127.0.0.1:99999": bad port`,
		path + `:15: max_sessions (listen 127.0.0.1:99999): want a whole number, not the string "many"`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if code != 2 || strings.Contains(errOut, "no provider named") || strings.Contains(errOut, "[]string") {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

// TestCheckDefaultConfig: check finds the configuration as run does, so a
// HOST:PORT argument gets the policy of the provider there that lists it
// (here: one allowed to use private addresses); and -provider narrows the
// check to that provider's endpoints.
func TestCheckDefaultConfig(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr := tlsServer(t, pki.ServerConfig())
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	// A trust store of its own: the test's CA is new at every run, and
	// the anchor learned for 127.0.0.1 must be this one's.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	os.MkdirAll(xdg+"/mailproxy", 0o700)
	conf := fmt.Sprintf(`[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
ca_file = %q
allow_private_addresses = true

[[provider]]
name = "other"
hosts = ["localhost"]
imap = "imaps://localhost:1"
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, addr, pki.CAFile)
	if err := os.WriteFile(xdg+"/mailproxy/mailproxy.toml", []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run("check", addr)
	if code != 0 || !strings.Contains(out, "imaps://"+addr+"  PASS") {
		t.Errorf("check HOST:PORT with the default configuration: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = run("check", "-provider", "local")
	if code != 0 || strings.Contains(out, "localhost:1") || !strings.Contains(out, "imaps://"+addr+"  PASS") {
		t.Errorf("check -provider local: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = run("check", "-config", xdg+"/mailproxy/mailproxy.toml", "-provider", "other")
	if code != 1 || strings.Contains(out, addr) || !strings.Contains(out, "imaps://localhost:1  FAIL") {
		t.Errorf("check -provider other: exit %d\n%s", code, out)
	}
}

// TestCertNeverReplacedSilently: cert keeps a certificate that lacks a
// listener address and says so; -renew replaces it and says what the old
// one was.
func TestCertNeverReplacedSilently(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	fingerprint := func(out string) string {
		m := regexp.MustCompile(`SHA-256: (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no fingerprint in %q", out)
		}
		return m[1]
	}
	a := writeFile(t, "a.toml", goodConfig)
	code, out, errOut := run("cert", "-config", a)
	if code != 0 || errOut != "" {
		t.Fatalf("first cert: exit %d, %s", code, errOut)
	}
	first := fingerprint(out)
	b := writeFile(t, "b.toml", strings.Replace(goodConfig, `address = "127.0.0.1:1143"`, `address = "127.0.0.2:1143"`, 1))
	code, out, errOut = run("cert", "-config", b)
	if code != 0 || fingerprint(out) != first || !strings.Contains(errOut, "is kept, but it does not name 127.0.0.2") || !strings.Contains(errOut, "-renew") {
		t.Errorf("cert for a new address: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = run("cert", "-config", a)
	if code != 0 || fingerprint(out) != first {
		t.Errorf("the certificate changed without -renew")
	}
	code, out, errOut = run("cert", "-config", b, "-renew")
	if code != 0 || fingerprint(out) == first || !strings.Contains(out, "Replaced the certificate with SHA-256 "+first) {
		t.Errorf("cert -renew: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestRunSaysItReplacesTheLocalCertificate: run, which renews the
// generated certificate by itself, names the one it replaces and why, so
// that the user knows the apps must trust a new one; when nothing changes,
// or no listener serves the generated certificate, it says nothing.
func TestRunSaysItReplacesTheLocalCertificate(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	tlsListener := strings.Replace(goodConfig, `address = "127.0.0.1:1143"`, "address = \"127.0.0.1:1143\"\nlocal_security = \"tls\"", 1)
	a := writeFile(t, "a.toml", tlsListener)
	if code, _, errOut := run("cert", "-config", a); code != 0 {
		t.Fatalf("cert: %s", errOut)
	}
	load := func(text string) *config.Config {
		t.Helper()
		c, err := config.Parse("m.toml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var buf strings.Builder
	warnLocalCertChange(load(tlsListener), &buf)
	if buf.Len() != 0 {
		t.Errorf("warned with nothing to replace: %q", buf.String())
	}
	moved := strings.Replace(tlsListener, "127.0.0.1:1143", "127.0.0.2:1143", 1)
	warnLocalCertChange(load(strings.Replace(moved, "local_security = \"tls\"", "", 1)), &buf)
	if buf.Len() != 0 {
		t.Errorf("warned for a listener without local TLS: %q", buf.String())
	}
	warnLocalCertChange(load(moved), &buf)
	if got := buf.String(); !strings.Contains(got, "replacing the local certificate") || !strings.Contains(got, "does not name 127.0.0.2") || !strings.Contains(got, "SHA-256 ") {
		t.Errorf("warning: %q", got)
	}
}

// TestReloadWarnsOfLocalCertChange: a SIGHUP that adds a local-TLS
// listener the generated certificate does not name warns, as run does at
// start, before the certificate is replaced.
func TestReloadWarnsOfLocalCertChange(t *testing.T) {
	xdg := t.TempDir()
	env := append(os.Environ(), "XDG_CONFIG_HOME="+xdg)
	first, up := freeAddr(t), freeAddr(t)
	tls := func(doc string) string {
		return strings.ReplaceAll(doc, "protocol = \"imap\"\n", "protocol = \"imap\"\nlocal_security = \"tls\"\n")
	}
	conf := writeFile(t, "w.toml", tls(listenerConfig("p", up, first)))
	p := startProcessEnv(t, env, "run", "-config", conf)
	p.wait(`"msg":"listener.start"`)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	os.WriteFile(conf, []byte(tls(listenerConfig("p", up, first, "127.0.0.2:"+port))), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if l := p.wait("replacing the local certificate"); !strings.Contains(l, "does not name 127.0.0.2") {
		t.Fatalf("warning: %s", l)
	}
	if l := p.wait(`"msg":"config.reload"`); !strings.Contains(l, `"result":"ok"`) {
		t.Fatalf("reload: %s", l)
	}
}

// TestReportCommand: report summarises an audit log on stdout and, with
// -html, in a self-contained page; usage errors exit 2.
func TestReportCommand(t *testing.T) {
	log := `{"time":"2026-01-02T10:00:00Z","level":"INFO","msg":"session.start","conn":"a","proto":"imap","client":"127.0.0.1:4000","provider":"example"}
{"time":"2026-01-02T10:00:01Z","level":"INFO","msg":"upstream.tls","conn":"a","proto":"imap","provider":"example","host":"mail.example.com","tls_version":"TLS1.3","cipher":"TLS_AES_128_GCM_SHA256","group":"X25519MLKEM768","verified":true}
{"time":"2026-01-02T10:00:01Z","level":"INFO","msg":"auth","conn":"a","proto":"imap","user":"alice","result":"ok"}
{"time":"2026-01-02T10:00:02Z","level":"WARN","msg":"policy.denied","reason":"remote_client","host":"192.0.2.9","detail":"not in allow_clients","client":"192.0.2.9","listener":"127.0.0.1:1143","proto":"imap"}
{"time":"2026-01-02T10:00:05Z","level":"INFO","msg":"session.end","conn":"a","proto":"imap","bytes_up":10,"bytes_down":20,"duration_ms":5000}
`
	path := writeFile(t, "audit.jsonl", log)
	html := path + ".html"
	code, out, errOut := run("report", "-html", html, path)
	if code != 0 || !strings.Contains(out, "Sessions: 1 (bytes up 10, down 20); logins: 1 ok, 0 failed") || !strings.Contains(out, "Refusals: 1") {
		t.Errorf("report: exit %d\n%s%s", code, out, errOut)
	}
	page, err := os.ReadFile(html)
	if err != nil || !strings.Contains(string(page), "<svg") || strings.Contains(string(page), "<script") {
		t.Errorf("report -html: %v\n%s", err, page)
	}
	if code, out, _ := run("report", "-since", "1h", path); code != 0 || !strings.Contains(out, "Sessions: 0") {
		t.Errorf("report -since 1h of an old log: exit %d\n%s", code, out)
	}
	if code, _, _ := run("report"); code != 2 {
		t.Errorf("report without a file: exit %d", code)
	}
	if code, _, _ := run("report", "/nonexistent.jsonl"); code != 1 {
		t.Errorf("report of a missing file: exit %d", code)
	}
}

// TestReloadRefusesLogChange: the audit log is opened at start, so a
// SIGHUP with another [log] is refused (and says to restart) rather than
// reported as applied.
func TestReloadRefusesLogChange(t *testing.T) {
	first, up := freeAddr(t), freeAddr(t)
	conf := writeFile(t, "log.toml", "[log]\nlevel = \"info\"\n\n"+listenerConfig("p", up, first))
	p := startProcess(t, "run", "-config", conf)
	p.wait(`"msg":"listener.start"`)
	os.WriteFile(conf, []byte("[log]\nlevel = \"warn\"\n\n"+listenerConfig("p", up, first)), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if l := p.wait(`"msg":"config.reload"`); !strings.Contains(l, `"result":"refused"`) || !strings.Contains(l, "restart mailproxy") {
		t.Fatalf("reload: %s", l)
	}
}
