//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/testkit"
)

// chromiumFlags keep headless Chromium to the page it is given: no
// background networking, updates, sync, telemetry, safe browsing or
// translation, no proxy, and a resolver that maps every name to nothing,
// so that it contacts nothing but 127.0.0.1. --no-sandbox: the suite runs
// as root, where Chromium's sandbox cannot start.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--disable-breakpad", "--disable-domain-reliability",
	"--disable-client-side-phishing-detection", "--metrics-recording-only", "--no-pings",
	"--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
	"--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
	"--window-size=1400,1600", "--timeout=15000",
}

// chromium runs headless Chromium on url with extra flags (--dump-dom,
// --screenshot=FILE), bounded in time, and returns its stdout.
func (s *step) chromium(bin, url string, extra ...string) string {
	s.t.Helper()
	profile := s.t.TempDir()
	argv := append(append([]string{bin, "--user-data-dir=" + profile}, chromiumFlags...), extra...)
	argv = append(argv, url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.Fatalf("chromium %s: %v\n%s", strings.Join(extra, " "), err, lastLines(stderr.String(), 20))
	}
	return string(out)
}

// TestStatusPageInBrowser: a real app (Python's imaplib) holds an IMAP
// session through mailproxy, another login is refused (it names a server
// outside the provider's hosts), and headless Chromium renders the status
// page: its DOM shows the live session with its user and bytes, the
// provider's TLS facts, and the refusal. A screenshot goes to the test's
// artifact folder (go test -artifacts -outputdir DIR keeps it).
func TestStatusPageInBrowser(t *testing.T) {
	e := suite.begin(t)
	chrome := testkit.NeedTool(t, "chromium")
	route := e.via(e.mp, "imap", modeTLS)
	py, _ := pythonPath()

	s := e.step(t, "imaplib", route, "hold a session open")
	hold := exec.Command(py, "imaplib_hold.py", "127.0.0.1", strconv.Itoa(route.port), alice.name)
	hold.Env = append(os.Environ(), "E2E_PASSWORD="+alice.pass)
	stdin, _ := hold.StdinPipe()
	stdout, _ := hold.StdoutPipe()
	var holdErr strings.Builder
	hold.Stderr = &holdErr
	if err := hold.Start(); err != nil {
		s.Fatalf("starting imaplib: %v", err)
	}
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- hold.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			hold.Process.Kill()
			<-done
		}
	}()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case l := <-ready:
		if strings.TrimSpace(l) != "READY" {
			s.Fatalf("imaplib did not log in: %q\n%s", l, holdErr.String())
		}
	case <-time.After(30 * time.Second):
		s.Fatalf("imaplib did not log in within 30 s\n%s", holdErr.String())
	}
	s.expectAudit("auth", map[string]string{"user": alice.name, "result": "ok"})

	r := e.step(t, "imaplib", route, "a login naming another server")
	res := r.run(cmdOpts{env: []string{"E2E_PASSWORD=" + alice.pass}},
		py, "imaplib_hold.py", "127.0.0.1", strconv.Itoa(route.port), alice.name+"#evil.example")
	if res.code != 3 {
		r.Fatalf("imaplib should report a refused login (exit 3)\n%s", res.describe())
	}
	r.expectAudit("policy.denied", map[string]string{"reason": "non_provider_host", "host": "evil.example"})

	b := e.step(t, "chromium", route, "render the status page")
	url := "http://" + e.mp.status + "/"
	dom := b.chromium(chrome, url, "--dump-dom")
	e.checkNoSecretsIn(t, "the status page", []byte(dom))

	row := regexp.MustCompile(`(?s)<tr class="session"[^>]*>.*?</tr>`).FindAllString(dom, -1)
	var mine string
	for _, r := range row {
		if strings.Contains(r, ">"+alice.name+"<") && strings.Contains(r, "logged in") {
			mine = r
		}
	}
	if mine == "" {
		b.Fatalf("the DOM shows no logged-in session of %s:\n%s", alice.name, dom)
	}
	if !strings.Contains(mine, ">provider-tls<") || !strings.Contains(mine, ">imap<") {
		b.Errorf("the session row does not name the provider and protocol:\n%s", mine)
	}
	if m := regexp.MustCompile(`data-bytes-down="(\d+)"`).FindStringSubmatch(mine); m == nil || m[1] == "0" {
		b.Errorf("the session row shows no bytes from the provider:\n%s", mine)
	}
	prov := regexp.MustCompile(`(?s)<tr class="provider" data-provider="provider-tls">.*?</tr>`).FindString(dom)
	for _, want := range []string{`class="tls-version">TLS1.3<`, `class="cipher">TLS_`, `class="group">`, "chain verified", " days)"} {
		if !strings.Contains(prov, want) {
			b.Errorf("the provider row lacks %q:\n%s", want, prov)
		}
	}
	ref := regexp.MustCompile(`(?s)<tr class="refusal" data-reason="non_provider_host">.*?</tr>`).FindString(dom)
	if !strings.Contains(ref, "evil.example") {
		b.Errorf("the DOM shows no refusal for evil.example:\n%s", dom)
	}

	shot := filepath.Join(t.ArtifactDir(), "status-page.png")
	b.chromium(chrome, url, "--screenshot="+shot)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 1000 {
		b.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}

// TestReportOfSuiteLog: `mailproxy report` on the audit log the suite has
// written so far gives the totals counted directly from its JSON lines.
func TestReportOfSuiteLog(t *testing.T) {
	e := suite.begin(t)
	s := e.step(t, "mailproxy report", e.via(e.mp, "imap", modeTLS), "summarise the audit log")
	// A copy, so that the report and the count read the same lines.
	raw, err := os.ReadFile(e.mp.audit.path)
	if err != nil {
		s.Fatalf("%v", err)
	}
	if i := strings.LastIndexByte(string(raw), '\n'); i >= 0 {
		raw = raw[:i+1]
	}
	logCopy := filepath.Join(t.TempDir(), "audit.jsonl")
	os.WriteFile(logCopy, raw, 0o600)

	var sessions, ok, fail, refusals, up, down int64
	versions := map[string]int64{}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(l), &ev) != nil {
			continue
		}
		num := func(k string) int64 { f, _ := ev[k].(float64); return int64(f) }
		switch ev["msg"] {
		case "session.start":
			sessions++
		case "auth":
			if ev["result"] == "ok" {
				ok++
			} else {
				fail++
			}
		case "session.end":
			up += num("bytes_up")
			down += num("bytes_down")
		case "upstream.tls":
			versions[ev["tls_version"].(string)]++
		case "policy.denied":
			if _, agg := ev["count"]; agg {
				refusals += num("count")
			} else {
				refusals++
			}
		}
	}
	if sessions == 0 {
		s.Fatalf("the audit log has no sessions yet")
	}
	page := filepath.Join(t.TempDir(), "report.html")
	r := s.must(cmdOpts{}, e.bin, "report", "-html", page, logCopy)
	out := string(r.stdout)
	for _, want := range []string{
		fmt.Sprintf("Sessions: %d (bytes up %d, down %d); logins: %d ok, %d failed\n", sessions, up, down, ok, fail),
		fmt.Sprintf("\nRefusals: %d\n", refusals),
	} {
		if !strings.Contains(out, want) {
			s.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	for v, n := range versions {
		if !regexp.MustCompile(`\n  ` + regexp.QuoteMeta(v) + `\s+` + strconv.FormatInt(n, 10) + `\n`).MatchString(out) {
			s.Errorf("the report does not count %d handshakes of %s:\n%s", n, v, out)
		}
	}
	html, err := os.ReadFile(page)
	if err != nil {
		s.Fatalf("%v", err)
	}
	if !strings.Contains(string(html), fmt.Sprintf(`<b id="sessions">%d</b>`, sessions)) || !strings.Contains(string(html), "<svg") || strings.Contains(string(html), "<script") {
		s.Errorf("the HTML report does not say %d sessions in a self-contained page", sessions)
	}
	e.checkNoSecretsIn(t, "the report", append(r.stdout, html...))
}
