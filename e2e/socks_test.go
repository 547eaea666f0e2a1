//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSOCKS puts a real SOCKS5 server (microsocks, on a free port of
// 127.0.0.1) in front of the provider, and a mailproxy whose providers are
// reached only through it with remote DNS: via = "socks5h://...", hosts
// and endpoints named "localhost", which microsocks resolves (the
// provider's certificate names localhost too). The whole TestUpstreamModes
// scenario runs through it, under `strace -f -e trace=connect,...`: every
// connect() of mailproxy goes to microsocks' port, and microsocks' log
// shows the host name mailproxy asked for, for each provider port.
func TestSOCKS(t *testing.T) {
	e := suite.begin(t)
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	socksPort := ports[0]
	dir := filepath.Join(e.work, "microsocks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	socksLog := &logFile{"microsocks log", filepath.Join(dir, "microsocks.log")}
	ms, err := startProc("microsocks", socksLog.path, true, nil, "microsocks", "-i", "127.0.0.1", "-p", strconv.Itoa(socksPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.stop(5 * time.Second) })
	if err := waitPort(ms, socksPort, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	via := "127.0.0.1:" + strconv.Itoa(socksPort)
	mp, err := e.startMailproxyWith("mailproxy-socks", true, func(cfg string) string {
		cfg = strings.ReplaceAll(cfg, `hosts = ["127.0.0.1"]`,
			fmt.Sprintf("hosts = [\"localhost\"]\nvia = \"socks5h://%s\"\nisolate = true", via))
		return strings.ReplaceAll(cfg, "://127.0.0.1:", "://localhost:")
	})
	if mp != nil {
		mp.upstreamHost, mp.via = "localhost", via
		e.extra = append(e.extra, mp)
	}
	if err != nil {
		t.Fatalf("starting mailproxy with via: %v", err)
	}
	used := map[int]bool{}
	for _, mode := range modes {
		for _, proto := range []string{"imap", "pop3", "smtp"} {
			_, port := e.prov.upstream(proto, mode)
			t.Run(proto+"/"+mode, func(t *testing.T) {
				modeScenario(t, e, mp, proto, mode)
				used[port] = true
			})
		}
	}
	if err := mp.stop(); err != nil {
		t.Fatalf("stopping mailproxy under strace: %v", err)
	}
	trace, err := os.ReadFile(mp.straceOut)
	if err != nil {
		t.Fatalf("reading the strace output: %v", err)
	}
	s := e.step(t, "strace", route{mp: mp, proto: "imap, pop3, smtp", desc: mp.name + " -> microsocks on " + via},
		"check that every connect of mailproxy goes to the SOCKS proxy")
	seen, bad := checkTrace(string(trace), map[int]bool{socksPort: true})
	if len(bad) > 0 {
		s.Fatalf("PRIVACY: mailproxy reached past its SOCKS proxy %s:\n%s", via, strings.Join(bad, "\n"))
	}
	if !seen[socksPort] || len(used) == 0 {
		s.Fatalf("strace saw no connect to the SOCKS proxy: is the trace complete?\n%s", lastLines(string(trace), 30))
	}
	log := socksLog.since(0)
	for port := range used {
		if want := "connected to localhost:" + strconv.Itoa(port); !strings.Contains(log, want) {
			s.Errorf("microsocks' log lacks %q (mailproxy must send the host name, not an address):\n%s", want, lastLines(log, 20))
		}
	}
	if strings.Contains(log, "connected to 127.0.0.1:") {
		s.Errorf("microsocks was asked for an address, not the name:\n%s", lastLines(log, 20))
	}
	t.Logf("strace: %d connects, all to microsocks on %s; microsocks resolved localhost for ports %v", countConnects(string(trace)), via, keys(used))
}
