package status_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"mailproxy/config"
	"mailproxy/internal/demo"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/imap"
	"mailproxy/status"
	"mailproxy/tlsconf"
)

// wrongPassword is a password no page, metric or log may show.
const wrongPassword = "Wr0ng-S3cret-xyzzy"

// events parses what an audit buffer holds.
func events(t *testing.T, b *testkit.Buffer) []policy.Event {
	var out []policy.Event
	for _, l := range bytes.Split(bytes.TrimSpace([]byte(b.String())), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		e, err := policy.ParseEvent(l)
		if err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, e)
	}
	return out
}

// rig is mailproxy in-process: an IMAP listener in front of the demo
// provider, its audit log, and the status page on a real listener.
type rig struct {
	imapAddr string
	page     *status.Server
	audit    *policy.Audit
	log      *testkit.Buffer
	base     string // http://127.0.0.1:port
}

func start(t *testing.T, access policy.Access) *rig {
	t.Helper()
	prov, err := demo.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	c, err := config.Parse("status-test", []byte(fmt.Sprintf(`[[provider]]
name = "demo"
hosts = ["127.0.0.1"]
imap = %q
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:0"
provider = "demo"
`, prov.IMAP, prov.CAFile)))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{log: &testkit.Buffer{}}
	collector := status.NewCollector()
	r.audit = policy.NewAudit(r.log, slog.LevelInfo, collector.Observe)
	srv := &proxy.Server{Audit: r.audit, Dialer: &tlsconf.Dialer{Timeout: 10 * time.Second},
		Fronts: map[policy.Proto]proxy.Front{policy.IMAP: imap.Front{}}}
	if err := srv.Start(context.Background(), c.Setup()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	r.imapAddr = srv.Listeners()[0].Addr().String()
	r.page = &status.Server{Collector: collector, Snapshot: srv.Snapshot, Audit: r.audit}
	if err := r.page.Start("127.0.0.1:0", access); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.page.Close)
	r.base = "http://" + r.page.Addr()
	return r
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// imapSession logs in through mailproxy and returns the connection.
func imapSession(t *testing.T, addr, user, password string) (*testkit.Conn, string) {
	t.Helper()
	c := testkit.Dial(t, addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN %s %s", user, password)
	return c, c.ExpectUntil("a1 *")[0]
}

// TestStatusPage: the page shows the listener, a live session with its
// user and bytes, the provider's TLS facts, a refused login and the
// counters — and never a password.
func TestStatusPage(t *testing.T) {
	r := start(t, policy.Access{Loopback: true})

	// A session that stays, after a FETCH that moved bytes.
	live, _ := imapSession(t, r.imapAddr, demo.User, demo.Password)
	live.Send("a2 SELECT INBOX")
	live.ExpectUntil("a2 OK *")
	live.Send("a3 FETCH 1 BODY[]")
	live.ExpectUntil("a3 OK *")
	// A wrong password, and a login naming another server (refused).
	bad, _ := imapSession(t, r.imapAddr, demo.User, wrongPassword)
	bad.Send("a9 LOGOUT")
	bad.ExpectClosed(5 * time.Second)
	refused, _ := imapSession(t, r.imapAddr, "demo#evil.example", wrongPassword)
	refused.Send("a9 LOGOUT")
	refused.ExpectClosed(5 * time.Second)

	code, page := get(t, r.base+"/")
	if code != 200 {
		t.Fatalf("GET /: %d\n%s", code, page)
	}
	row := regexp.MustCompile(`(?s)<tr class="session"[^>]*>.*?</tr>`).FindString(page)
	for _, want := range []string{">" + demo.User + "<", ">demo<", "logged in", ">imap<"} {
		if !strings.Contains(row, want) {
			t.Errorf("the session row lacks %q:\n%s", want, row)
		}
	}
	if m := regexp.MustCompile(`data-bytes-down="(\d+)"`).FindStringSubmatch(row); m == nil || m[1] == "0" {
		t.Errorf("the live session shows no bytes down: %s", row)
	}
	if !strings.Contains(page, `data-address="`+r.imapAddr+`"`) {
		t.Errorf("the listener %s is not shown", r.imapAddr)
	}
	prov := regexp.MustCompile(`(?s)<tr class="provider" data-provider="demo">.*?</tr>`).FindString(page)
	for _, want := range []string{"TLS1.3", "TLS_AES", "X25519", "chain verified", " days)"} {
		if !strings.Contains(prov, want) {
			t.Errorf("the provider row lacks %q:\n%s", want, prov)
		}
	}
	ref := regexp.MustCompile(`(?s)<tr class="refusal" data-reason="non_provider_host">.*?</tr>`).FindString(page)
	if !strings.Contains(ref, "evil.example") {
		t.Errorf("the refused login is not shown:\n%s", page)
	}
	if !strings.Contains(page, `data-name="mailproxy_auth_total"`) {
		t.Errorf("no counters on the page")
	}
	if strings.Contains(page, wrongPassword) {
		t.Errorf("the page shows a password")
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "src=") {
		t.Errorf("the page loads or runs something")
	}
	live.Send("a4 LOGOUT")
	live.ExpectClosed(5 * time.Second)
}

// TestMetricsMatchAudit: /metrics, parsed with the Prometheus text parser,
// counts exactly what the audit log of the same run says.
func TestMetricsMatchAudit(t *testing.T) {
	r := start(t, policy.Access{Loopback: true})
	var held []*testkit.Conn
	for i := range 3 {
		c, _ := imapSession(t, r.imapAddr, demo.User, demo.Password)
		if i < 2 {
			c.Send("a2 LOGOUT")
			c.ExpectClosed(5 * time.Second)
		} else {
			held = append(held, c)
		}
	}
	for _, user := range []string{demo.User, "demo#evil.example"} {
		c, _ := imapSession(t, r.imapAddr, user, wrongPassword)
		c.Send("a9 LOGOUT")
		c.ExpectClosed(5 * time.Second)
	}
	// The status page's own refusal is counted too.
	req, _ := http.NewRequest("GET", r.base+"/metrics", nil)
	req.Host = "rebind.example:80"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("a request for another host: %v %v", resp, err)
	}
	waitEnds(t, r.log, 4)

	code, body := get(t, r.base+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		f := fams[name]
		if f == nil {
			return 0
		}
	next:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		return 0
	}

	// The same counts, straight from the JSON lines.
	var starts, ends, up, down, tls13, authOK, authFail float64
	denied := map[string]float64{}
	for _, e := range events(t, r.log) {
		switch e.Msg {
		case policy.EventSessionStart:
			starts++
		case policy.EventSessionEnd:
			ends++
			up += float64(e.Int("bytes_up"))
			down += float64(e.Int("bytes_down"))
		case policy.EventUpstreamTLS:
			if e.Str("tls_version") == "TLS1.3" {
				tls13++
			}
		case policy.EventAuth:
			if e.Str("result") == "ok" {
				authOK++
			} else {
				authFail++
			}
		case policy.EventDenied:
			n := float64(1)
			if c, ok := e.Fields["count"].(int64); ok {
				n = float64(c)
			}
			denied[e.Str("reason")] += n
		}
	}
	if starts != 5 || authOK != 3 || authFail != 1 || denied["non_provider_host"] != 1 || denied["input"] != 1 {
		t.Fatalf("the run did not go as planned: %v starts, %v ok, %v fail, denied %v\n%s", starts, authOK, authFail, denied, r.log.String())
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mailproxy_sessions_total", map[string]string{"proto": "imap", "provider": "demo"}, starts},
		{"mailproxy_sessions_active", map[string]string{"proto": "imap", "provider": "demo"}, starts - ends},
		{"mailproxy_bytes_total", map[string]string{"direction": "up"}, up},
		{"mailproxy_bytes_total", map[string]string{"direction": "down"}, down},
		{"mailproxy_auth_total", map[string]string{"result": "ok"}, authOK},
		{"mailproxy_auth_total", map[string]string{"result": "fail"}, authFail},
		{"mailproxy_policy_denied_total", map[string]string{"reason": "non_provider_host"}, denied["non_provider_host"]},
		{"mailproxy_policy_denied_total", map[string]string{"reason": "input"}, denied["input"]},
		{"mailproxy_upstream_tls_total", map[string]string{"provider": "demo", "tls_version": "TLS1.3"}, tls13},
		{"mailproxy_upstream_handshake_seconds", map[string]string{"provider": "demo"}, tls13},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, the audit log says %v", c.name, c.labels, got, c.want)
		}
	}
	if strings.Contains(body, wrongPassword) || strings.Contains(r.log.String(), wrongPassword) {
		t.Error("a password reached the metrics or the log")
	}
	for _, c := range held {
		c.Send("a9 LOGOUT")
	}
}

// waitEnds waits for n session.end events.
func waitEnds(t *testing.T, log *testkit.Buffer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ends := 0
		for _, e := range events(t, log) {
			if e.Msg == policy.EventSessionEnd {
				ends++
			}
		}
		if ends >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("fewer than %d sessions ended:\n%s", n, log.String())
}

// TestStatusPageRefuses: the page answers GET and HEAD for its own
// address from admitted clients only, and audits every refusal.
func TestStatusPageRefuses(t *testing.T) {
	r := start(t, policy.Access{Loopback: true})
	do := func(method, host string) int {
		path := "/"
		if m, p, ok := strings.Cut(method, " "); ok {
			method, path = m, p
		}
		req, _ := http.NewRequest(method, r.base+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	_, port, _ := net.SplitHostPort(r.page.Addr())
	for _, c := range []struct {
		method, host string
		want         int
	}{
		{"GET", "", 200},
		{"HEAD", "", 200},
		{"GET", "localhost:" + port, 200},
		{"GET", "[::1]:" + port, 200},
		{"GET", "attacker.example:" + port, http.StatusMisdirectedRequest}, // DNS rebinding
		{"GET", "localhost:1", http.StatusMisdirectedRequest},
		{"GET", "localhost", http.StatusMisdirectedRequest},
		{"POST", "", http.StatusMethodNotAllowed},
		{"DELETE", "", http.StatusMethodNotAllowed},
		{"GET /favicon.ico", "", http.StatusNoContent}, // not a refusal: browsers ask
		{"GET /admin", "", http.StatusNotFound},
		{"GET /metrics", "", 200},
	} {
		if got := do(c.method, c.host); got != c.want {
			t.Errorf("%s with Host %q: %d, want %d", c.method, c.host, got, c.want)
		}
	}
	r.audit.Flush()
	var refusals int64
	for _, e := range events(t, r.log) {
		if e.Msg == policy.EventDenied && e.Str("proto") == "http" && e.Str("reason") == "input" && e.Str("listener") == r.page.Addr() {
			refusals++
			if n, ok := e.Fields["count"].(int64); ok {
				refusals += n - 1
			}
		}
	}
	if refusals != 6 {
		t.Errorf("%d refusals on record, want 6:\n%s", refusals, r.log.String())
	}

	// A client outside allow_clients.
	r2 := start(t, policy.Access{AllowClients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	// Turned away at accept, before it can hold one of the page's
	// connection slots: no answer at all.
	if resp, err := http.Get(r2.base + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("a client outside allow_clients got %d", resp.StatusCode)
	}
	if !strings.Contains(r2.log.String(), `"reason":"remote_client"`) {
		t.Errorf("the refused client is not on record:\n%s", r2.log.String())
	}
}

// TestStatusPageMoves: Prepare and Commit move the page to a new address
// (the old one stops), Abort leaves it where it was, and "" removes it.
func TestStatusPageMoves(t *testing.T) {
	r := start(t, policy.Access{Loopback: true})
	old := r.base
	// The same address with other clients: the access changes in place.
	p, err := r.page.Prepare(r.page.Addr(), policy.Access{AllowClients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	if resp, err := http.Get(old + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("after a change of allow_clients: %d", resp.StatusCode)
	}
	p, _ = r.page.Prepare(r.page.Addr(), policy.Access{Loopback: true})
	p.Commit()
	p, err = r.page.Prepare("127.0.0.1:0", policy.Access{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Abort()
	if code, _ := get(t, old+"/"); code != 200 {
		t.Fatalf("after Abort the page is gone: %d", code)
	}
	p, err = r.page.Prepare("127.0.0.1:0", policy.Access{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	if code, _ := get(t, "http://"+r.page.Addr()+"/"); code != 200 || "http://"+r.page.Addr() == old {
		t.Fatalf("the page did not move: %d at %s", code, r.page.Addr())
	}
	if _, err := http.Get(old + "/"); err == nil {
		t.Errorf("the old address still answers")
	}
	p, _ = r.page.Prepare("", policy.Access{})
	p.Commit()
	if r.page.Addr() != "" {
		t.Errorf("the page is still at %s", r.page.Addr())
	}
}

// TestStatusPageRebindsAfterFailure: when the listener fails under the
// page, a reload to the same address binds it again instead of keeping
// the dead one.
func TestStatusPageRebindsAfterFailure(t *testing.T) {
	r := start(t, policy.Access{Loopback: true})
	addr := r.page.Addr()
	r.page.BreakListener()
	if got := r.page.Addr(); got != "" {
		t.Fatalf("a failed page still claims %s", got)
	}
	p, err := r.page.Prepare(addr, policy.Access{Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	if code, _ := get(t, "http://"+addr+"/"); code != 200 {
		t.Fatalf("after the reload: %d", code)
	}
}

// TestStatusPageConnectionsBounded: a program that opens socket after
// socket and says nothing gets at most maxConns of them served; the page
// answers again as soon as one is given up.
func TestStatusPageConnectionsBounded(t *testing.T) {
	r := start(t, policy.Access{Loopback: true})
	var idle []net.Conn
	for range status.MaxConns {
		c, err := net.Dial("tcp", r.page.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	c, err := net.Dial("tcp", r.page.Addr()) // the kernel's backlog takes it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", r.page.Addr())
	c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := c.Read(make([]byte, 1)); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection %d was served (%d bytes, %v)", status.MaxConns+1, n, err)
	}
	idle[0].Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("after one closed: %q, %v", line, err)
	}
}
