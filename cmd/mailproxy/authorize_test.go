package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailproxy/grant"
	"mailproxy/internal/authserver"
	"mailproxy/internal/testkit"
)

const (
	oauthAccount = "alice@example.test"
	oauthLocal   = "local-Pa55phrase"
)

// oauthSetup starts an authorization server and writes a configuration
// whose provider uses it; the data folder is a temporary one.
func oauthSetup(t *testing.T) (*testkit.PKI, *authserver.Server, string, string) {
	t.Helper()
	pki := testkit.NewPKI(t)
	as, err := authserver.Start(pki.Cert, "mailproxy-test", "", oauthAccount)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Close)
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	audit := filepath.Join(t.TempDir(), "audit.log")
	conf := writeFile(t, "oauth.toml", fmt.Sprintf(`[log]
audit = %q

[[provider]]
name = "example"
hosts = ["127.0.0.1"]
imap = "imaps://127.0.0.1:1"
ca_file = %q
allow_private_addresses = true
[provider.oauth2]
client_id = "mailproxy-test"
auth_url = "%s/authorize"
token_url = "%s/token"
device_auth_url = "%s/device"
scopes = ["mail"]

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "example"
`, audit, pki.CAFile, as.URL, as.URL, as.URL))
	return pki, as, conf, audit
}

// noSecrets fails if any secret is in any of the texts.
func noSecrets(t *testing.T, secrets []string, texts ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, text := range texts {
			if s != "" && strings.Contains(text, s) {
				t.Fatalf("a secret (%d bytes) was written out", len(s))
			}
		}
	}
}

func TestAuthorizeDevice(t *testing.T) {
	_, as, conf, audit := oauthSetup(t)
	as.DevicePending = 1
	stdin = strings.NewReader(oauthLocal + "\n")
	defer func() { stdin = os.Stdin }()
	code, out, errs := run("authorize", "-config", conf, "-provider", "example", "-device", oauthAccount)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	if !strings.Contains(out, as.URL+"/device") || !strings.Contains(out, "WDJB-MJHT") || !strings.Contains(out, "Stored") {
		t.Fatalf("output: %s", out)
	}
	checkStored(t, as)
	log, _ := os.ReadFile(audit)
	if !strings.Contains(string(log), `"msg":"upstream.tls","conn":"authorize","proto":"https"`) {
		t.Fatalf("the token endpoint's connection is not audited:\n%s", log)
	}
	noSecrets(t, append(as.Secrets(), oauthLocal), out, errs, string(log))

	code, out, _ = run("tokens")
	if code != 0 || !strings.Contains(out, oauthAccount) || !strings.Contains(out, "example") || !strings.Contains(out, "never") {
		t.Fatalf("tokens: %d %s", code, out)
	}
	noSecrets(t, append(as.Secrets(), oauthLocal), out)
	if code, _, _ := run("tokens", "remove", "nobody@example.test"); code != 1 {
		t.Fatalf("removing an unknown account: exit %d", code)
	}
	if code, out, _ := run("tokens", "remove", oauthAccount); code != 0 || !strings.Contains(out, "Removed") {
		t.Fatalf("tokens remove: %d %s", code, out)
	}
	if _, out, _ := run("tokens"); !strings.Contains(out, "No stored authorizations") {
		t.Fatalf("after remove: %s", out)
	}
}

// checkStored opens the stored record with the local password.
func checkStored(t *testing.T, as *authserver.Server) {
	t.Helper()
	st, err := tokenStore()
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Load("example", oauthAccount)
	if err != nil {
		t.Fatal(err)
	}
	if r.KDF != grant.DefaultKDF {
		t.Fatalf("stored with %+v", r.KDF)
	}
	if _, err := r.Open(r.DeriveKey(oauthLocal)); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(st.Dir)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("token folder mode %v", fi.Mode())
	}
}

// pipeWriter gives the lines a command writes, as it writes them.
func pipeWriter() (io.WriteCloser, <-chan string) {
	r, w := io.Pipe()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return w, lines
}

// TestAuthorizeLoopback plays the browser: it opens the printed URL; the
// test server approves and redirects to mailproxy's loopback listener.
func TestAuthorizeLoopback(t *testing.T) {
	pki, as, conf, audit := oauthSetup(t)
	stdin = strings.NewReader(oauthLocal + "\n")
	defer func() { stdin = os.Stdin }()
	stdout, lines := pipeWriter()
	var errb strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- mainArgs([]string{"authorize", "-config", conf, "-provider", "example", oauthAccount}, stdout, &errb)
		stdout.Close()
	}()
	var printed strings.Builder
	browser := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ServerConfig()}, Timeout: 10 * time.Second}
	browser.Transport.(*http.Transport).TLSClientConfig.RootCAs = pki.CA.Pool()
	timeout := time.After(20 * time.Second)
	opened := false
	for !opened {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("authorize ended before printing a URL: %s %s", printed.String(), errb.String())
			}
			printed.WriteString(l + "\n")
			if u := strings.TrimSpace(l); strings.HasPrefix(u, as.URL+"/authorize?") {
				resp, err := browser.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(body), "mailproxy is authorized") {
					t.Fatalf("the browser was shown %q", body)
				}
				opened = true
			}
		case <-timeout:
			t.Fatalf("no URL printed: %s", printed.String())
		}
	}
	for l := range lines {
		printed.WriteString(l + "\n")
	}
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s %s", code, printed.String(), errb.String())
	}
	checkStored(t, as)
	log, _ := os.ReadFile(audit)
	noSecrets(t, append(as.Secrets(), oauthLocal), printed.String(), errb.String(), string(log))
	if as.Count("code") != 1 {
		t.Fatalf("%d code exchanges", as.Count("code"))
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	_, as, conf, _ := oauthSetup(t)
	defer func() { stdin = os.Stdin }()
	// An account name no record can hold is refused before the provider
	// is asked for anything: no grant is issued only to be thrown away.
	for _, args := range [][]string{{"-device"}, {}} {
		args = append([]string{"authorize", "-config", conf, "-provider", "example"}, append(args, oauthAccount+" ")...)
		if code, _, errs := run(args...); code != 2 || !strings.Contains(errs, "must not begin or end with a space") {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
	}
	for _, kind := range []string{"authorize", "device", "poll", "code"} {
		if n := as.Count(kind); n != 0 {
			t.Fatalf("%d %s requests for a name no record can hold", n, kind)
		}
	}
	stdin = strings.NewReader("short\n")
	if code, _, errs := run("authorize", "-config", conf, "-provider", "example", "-device", oauthAccount); code != 1 || !strings.Contains(errs, "at least 8 characters") {
		t.Fatalf("short password: %d %s", code, errs)
	}
	if code, _, errs := run("authorize", "-provider", "gmail", oauthAccount); code != 2 || !strings.Contains(errs, "client_id") {
		t.Fatalf("preset without a client: %d %s", code, errs)
	}
	if code, _, _ := run("authorize", "-config", conf, oauthAccount); code != 2 {
		t.Fatalf("no -provider: %d", code)
	}
}
