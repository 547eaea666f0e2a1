package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailproxy/config"
	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
)

// run runs a command line in-process and returns its exit code and output.
func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := mainArgs(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `[[provider]]
name = "example"
hosts = ["mail.example.com"]
imap = "imaps://mail.example.com:993"

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "example"
`

func TestConfigCheck(t *testing.T) {
	code, out, _ := run("config", "check", "-config", writeFile(t, "ok.toml", goodConfig))
	if code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("good config: exit %d, %q", code, out)
	}
	cases := []struct {
		name, doc, want string
	}{
		{"typo", strings.Replace(goodConfig, "hosts", "hostz", 1), `:3: hostz (provider #1): unknown key in [provider] (did you mean "hosts"?)`},
		{"outside", strings.Replace(goodConfig, "imaps://mail.example.com", "imaps://imap.evil.test", 1), `:4: imap (provider "example"): endpoint host imap.evil.test is not in hosts`},
		{"version", strings.Replace(goodConfig, `imap = "imaps`, "min_tls = \"1.5\"\nimap = \"imaps", 1), `:4: min_tls (provider "example"): "1.5" is not a TLS version`},
		{"lan", strings.Replace(goodConfig, "127.0.0.1:1143", "192.168.1.2:1143", 1), `:8: address (listen 192.168.1.2:1143): 192.168.1.2:1143 is not a loopback address`},
	}
	for _, c := range cases {
		path := writeFile(t, c.name+".toml", c.doc)
		code, _, errOut := run("config", "check", "-config", path)
		if code != 2 || !strings.Contains(errOut, path+c.want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant it to contain %q", c.name, code, errOut, path+c.want)
		}
		if c.name == "outside" && !strings.Contains(errOut, `"msg":"policy.denied","reason":"non_provider_host","host":"imap.evil.test"`) {
			t.Errorf("an endpoint outside hosts was not audited as policy.denied:\n%s", errOut)
		}
	}
	if code, _, _ := run("config", "check"); code != 2 {
		t.Errorf("config check without -config: exit %d", code)
	}
	if code, _, _ := run("config", "check", "-config", "/nonexistent.toml"); code != 2 {
		t.Errorf("missing file: exit %d", code)
	}
}

// TestConfigLocations: without -config, the user's configuration is found,
// else the machine's; the tests' own (TestMain), never the real ones.
func TestConfigLocations(t *testing.T) {
	user := filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "mailproxy", "mailproxy.toml")
	if paths := config.DefaultPaths(); len(paths) != 2 || paths[0] != user || paths[1] != config.SystemPath ||
		!strings.HasPrefix(config.SystemPath, os.TempDir()) {
		t.Fatalf("the tests would read %v", paths)
	}
	authorize := func() string {
		_, _, errOut := run("authorize", "-provider", "example", "alice@example.test")
		return errOut
	}
	if errOut := authorize(); strings.Contains(errOut, "[provider.oauth2]") {
		t.Fatalf("a configuration was found: %s", errOut)
	}
	for _, p := range []string{config.SystemPath, user} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(goodConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(p)
		// Found: its provider "example" (no preset) has no OAuth2 table.
		if errOut := authorize(); !strings.Contains(errOut, `provider "example" has no [provider.oauth2]`) {
			t.Fatalf("%s was not read: %s", p, errOut)
		}
		if p == config.SystemPath {
			os.Remove(p) // the user's alone next
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, errOut := run("frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
	if code, out, _ := run("version"); code != 0 || !strings.HasPrefix(out, "mailproxy ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errOut := run("run", "-provider", "nosuch"); code != 2 || !strings.Contains(errOut, "runbox") {
		t.Errorf("unknown preset: %d %q", code, errOut)
	}
}

// tlsServer serves TLS handshakes on 127.0.0.1 and returns its address.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, ln, func(c net.Conn) { c.(*tls.Conn).Handshake() })
	return ln.Addr().String()
}

func TestCheck(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no default configuration
	t.Setenv("XDG_DATA_HOME", t.TempDir())   // a trust store for this test's CA
	pki := testkit.NewPKI(t)
	addr := tlsServer(t, pki.ServerConfig())
	conf := writeFile(t, "check.toml", fmt.Sprintf(`[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, addr, pki.CAFile))

	code, out, errOut := run("check", "-config", conf)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"imaps://" + addr + "  PASS", "tls_version  TLS1.3", "cipher       TLS_AES", "group        X25519", "subject      CN=127.0.0.1", "issuer       CN=mailproxy test CA", "pin          sha256/"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	// -json, and a HOST:PORT argument checked under the configured
	// provider's policy.
	code, out, _ = run("check", "-config", conf, "-json", addr)
	var r checkResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.OK || r.TLSVersion != "TLS1.3" || !strings.HasPrefix(r.Pin, "sha256/") {
		t.Errorf("check -json: exit %d, %q, %v", code, out, err)
	}

	// A HOST:PORT no provider lists gets the default policy: a loopback
	// address is refused.
	code, out, _ = run("check", "-json", "-tls", addr)
	json.Unmarshal([]byte(out), &r)
	if code != 1 || r.OK || r.Reason != "private_address" {
		t.Errorf("ad hoc loopback check: exit %d, %q", code, out)
	}
}

func TestCheckRefusalReason(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	pki := testkit.NewPKI(t)
	// A server offering only TLS 1.2 RSA key exchange.
	cfg := pki.ServerConfig()
	cfg.MaxVersion = tls.VersionTLS12
	cfg.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
	rsaCert, err := pki.CA.Issue(rsaLeaf())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{rsaCert}
	addr := tlsServer(t, cfg)
	conf := writeFile(t, "check.toml", fmt.Sprintf(`[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, addr, pki.CAFile))
	code, out, _ := run("check", "-config", conf)
	if code != 1 || !strings.Contains(out, "FAIL  reason=cipher") {
		t.Errorf("RSA key exchange server: exit %d\n%s", code, out)
	}
}

// TestRunServesAndStops runs the real binary: it must refuse a weakening
// GODEBUG, start the configured listener, audit listener.start, serve, and
// exit 0 on SIGTERM.
func TestRunServesAndStops(t *testing.T) {
	bin := buildBinary(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	listen := ln.Addr().String()
	ln.Close()
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String() // nothing listens here: the provider is down
	ln.Close()
	conf := writeFile(t, "run.toml", fmt.Sprintf(`[[provider]]
name = "down"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = %q
provider = "down"
`, closed, listen))

	cmd := exec.Command(bin, "run", "-config", conf)
	cmd.Env = append(os.Environ(), "GODEBUG=tlsrsakex=1")
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "tlsrsakex=1") {
		t.Errorf("GODEBUG=tlsrsakex=1: exit %d (%v), %q", code, err, out)
	}

	cmd = exec.Command(bin, "-config", conf) // run is the default command
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(want string) string {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("mailproxy exited before %q", want)
				}
				if strings.Contains(l, want) {
					return l
				}
			case <-timeout:
				t.Fatalf("no line with %q", want)
			}
		}
	}
	start := waitLine(`"msg":"listener.start"`)
	if !strings.Contains(start, `"address":"`+listen+`"`) || !strings.Contains(start, `"upstream":"imaps://`+closed+`"`) {
		t.Errorf("listener.start = %s", start)
	}
	// An app that logs in is told that the provider is unreachable.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if reply := loginReply(c); !strings.HasPrefix(reply, "a1 NO [UNAVAILABLE] mailproxy cannot reach the provider") {
		t.Errorf("login reply %q", reply)
	}
	c.Close()
	waitLine(`"msg":"session.end"`)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
}

func rsaLeaf() certs.Leaf { return certs.Leaf{Names: []string{"127.0.0.1"}, RSA: true} }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildBinary builds mailproxy once for the tests that run it as a process.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mailproxy-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "mailproxy")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	// Never the user's data folder (trust store): a temporary one, which
	// the processes the tests start inherit.
	data, err := os.MkdirTemp("", "mailproxy-data")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", data)
	// Nor the user's or the machine's configuration: a command run without
	// -config finds none unless a test writes one here. And no desktop, so
	// that authorize never starts the user's browser.
	conf, err := os.MkdirTemp("", "mailproxy-config")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", conf)
	config.SystemPath = filepath.Join(conf, "etc", "mailproxy.toml")
	os.Unsetenv("DISPLAY")
	os.Unsetenv("WAYLAND_DISPLAY")
	code := m.Run()
	os.RemoveAll(data)
	os.RemoveAll(conf)
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// process is mailproxy running as a child, with its stderr (the audit log)
// read line by line.
type process struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	log   *strings.Builder
	mu    sync.Mutex
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, nil, args...)
}

// startProcessEnv starts mailproxy with an environment (nil: this one's).
func startProcessEnv(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, cmd: exec.Command(buildBinary(t), args...), lines: make(chan string, 1000), log: &strings.Builder{}}
	p.cmd.Env = env
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// wait returns the next stderr line containing want.
func (p *process) wait(want string) string {
	p.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("mailproxy exited before %q; its log:\n%s", want, p.logText())
			}
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			p.t.Fatalf("no line with %q; log:\n%s", want, p.logText())
		}
	}
}

func (p *process) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// loginReply reads an IMAP greeting, logs in, and returns the tagged reply:
// the provider is dialled only then.
func loginReply(c net.Conn) string {
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return "no greeting: " + err.Error()
	}
	fmt.Fprintf(c, "a1 LOGIN user pass\r\n")
	for {
		l, err := br.ReadString('\n')
		if err != nil || strings.HasPrefix(l, "a1 ") {
			return l
		}
	}
}

func listenerConfig(provider, upstream string, listen ...string) string {
	s := fmt.Sprintf(`[[provider]]
name = %q
hosts = ["127.0.0.1"]
imap = "imaps://%s"
allow_private_addresses = true
`, provider, upstream)
	for _, l := range listen {
		s += fmt.Sprintf(`
[[listen]]
protocol = "imap"
address = %q
provider = %q
`, l, provider)
	}
	return s
}

// TestReloadOnSIGHUP: a valid new configuration applies to new sessions
// (and starts a new listener); an invalid one is refused with a clear log
// line and the running configuration is kept.
func TestReloadOnSIGHUP(t *testing.T) {
	first, second := freeAddr(t), freeAddr(t)
	upA, upB := freeAddr(t), freeAddr(t) // nothing listens: the BYE names them
	conf := writeFile(t, "reload.toml", listenerConfig("a", upA, first))
	p := startProcess(t, "run", "-config", conf)
	p.wait(`"msg":"listener.start"`)

	greet := func(addr string) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "refused: " + err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return loginReply(c)
	}
	if g := greet(first); !strings.Contains(g, upA) {
		t.Fatalf("before reload: %q", g)
	}

	os.WriteFile(conf, []byte(listenerConfig("b", upB, first, second)), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if l := p.wait(`"msg":"config.reload"`); !strings.Contains(l, `"result":"ok"`) {
		t.Fatalf("reload: %s", l)
	}
	if g := greet(first); !strings.Contains(g, upB) {
		t.Errorf("after reload, the first listener still uses the old provider: %q", g)
	}
	if g := greet(second); !strings.Contains(g, upB) {
		t.Errorf("after reload, the new listener: %q", g)
	}

	os.WriteFile(conf, []byte(strings.Replace(listenerConfig("c", upA, first), "hosts", "hostz", 1)), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	l := p.wait(`"msg":"config.reload"`)
	if !strings.Contains(l, `"result":"refused"`) || !strings.Contains(l, "hostz") || !strings.Contains(l, "reload.toml:3") {
		t.Errorf("invalid reload: %s", l)
	}
	if g := greet(first); !strings.Contains(g, upB) {
		t.Errorf("after a refused reload the old configuration must stay: %q", g)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit: %v", err)
	}
}

// TestReloadNeverBlocks: with an IMAP session open, a SIGHUP that changes
// its listener to POP3 applies at once (the old session goes on); a SIGHUP
// onto a taken address changes nothing (every port still answers as
// before); SIGTERM then ends the process within the grace period.
func TestReloadNeverBlocks(t *testing.T) {
	first, second, up := freeAddr(t), freeAddr(t), freeAddr(t)
	conf := func(proto1 string, extra ...string) string {
		s := fmt.Sprintf(`[[provider]]
name = "p"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
pop3 = "pop3s://%s"
allow_private_addresses = true

[[listen]]
protocol = %q
address = %q
provider = "p"

[[listen]]
protocol = "pop3"
address = %q
provider = "p"
`, up, up, proto1, first, second)
		for _, a := range extra {
			s += fmt.Sprintf("\n[[listen]]\nprotocol = \"imap\"\naddress = %q\nprovider = \"p\"\n", a)
		}
		return s
	}
	path := writeFile(t, "reload.toml", conf("imap"))
	p := startProcess(t, "run", "-config", path)
	p.wait(`"msg":"listener.start"`)
	p.wait(`"msg":"listener.start"`)
	greeting := func(addr string) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "refused: " + err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		l, _ := bufio.NewReader(c).ReadString('\n')
		return l
	}
	old, err := net.Dial("tcp", first)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.SetDeadline(time.Now().Add(20 * time.Second))
	oldR := bufio.NewReader(old)
	oldR.ReadString('\n') // the IMAP greeting

	os.WriteFile(path, []byte(conf("pop3")), 0o644)
	begin := time.Now()
	p.cmd.Process.Signal(syscall.SIGHUP)
	if l := p.wait(`"msg":"config.reload"`); !strings.Contains(l, `"result":"ok"`) {
		t.Fatalf("reload: %s", l)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("the reload took %v with a session open", d)
	}
	if g := greeting(first); !strings.HasPrefix(g, "+OK") {
		t.Errorf("after the reload %s greets %q, want POP3", first, g)
	}
	fmt.Fprintf(old, "a NOOP\r\n")
	if l, _ := oldR.ReadString('\n'); !strings.HasPrefix(l, "a OK") {
		t.Errorf("the IMAP session open before the reload: %q", l)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	os.WriteFile(path, []byte(conf("imap", busy.Addr().String())), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if l := p.wait(`"msg":"config.reload"`); !strings.Contains(l, `"result":"refused"`) {
		t.Fatalf("a reload onto a taken address: %s", l)
	}
	if g := greeting(first); !strings.HasPrefix(g, "+OK") {
		t.Errorf("after a refused reload %s greets %q, want POP3 as before", first, g)
	}
	if g := greeting(second); !strings.HasPrefix(g, "+OK") {
		t.Errorf("after a refused reload %s greets %q", second, g)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	time.AfterFunc(time.Second, func() { old.Close() }) // the app leaves
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(shutdownGrace + 5*time.Second):
		t.Fatal("SIGTERM did not end the process within the grace period")
	}
}
