//go:build e2e

package e2e

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestPrivacyOnlyProviderConnections runs the whole TestUpstreamModes
// scenario (every relay, every upstream mode) through a second mailproxy
// running under `strace -f -e trace=connect,sendto,sendmsg`, and asserts
// that mailproxy's only outbound connections went to the provider's
// ports on 127.0.0.1: no other port, no other address, no IPv6, no unix
// socket, and no datagram to anywhere else (a DNS query, say).
func TestPrivacyOnlyProviderConnections(t *testing.T) {
	e := suite.begin(t)
	mp, err := e.startMailproxy("mailproxy-strace", true)
	if mp != nil {
		e.extra = append(e.extra, mp)
	}
	if err != nil {
		t.Fatalf("starting mailproxy under strace: %v", err)
	}
	allowed := map[int]bool{}
	used := map[int]bool{}
	for _, mode := range modes {
		for _, proto := range []string{"imap", "pop3", "smtp"} {
			_, port := e.prov.upstream(proto, mode)
			allowed[port] = true
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
	s := e.step(t, "strace", route{mp: mp, proto: "imap, pop3, smtp", desc: mp.name + " -> the provider's ports on 127.0.0.1"},
		"check every connect, sendto and sendmsg of mailproxy")
	seen, bad := checkTrace(string(trace), allowed)
	if len(bad) > 0 {
		s.Fatalf("PRIVACY: mailproxy reached outside the provider's ports on 127.0.0.1 (allowed ports %v):\n%s", keys(allowed), strings.Join(bad, "\n"))
	}
	for port := range used {
		if !seen[port] {
			s.Fatalf("strace saw no connect to 127.0.0.1:%d, which the scenario used: is the trace complete?\n%s", port, lastLines(string(trace), 30))
		}
	}
	t.Logf("strace: %d connects, all to the provider on 127.0.0.1 ports %v", countConnects(string(trace)), keys(seen))
}

var (
	syscallRE = regexp.MustCompile(`\b(connect|sendto|sendmsg)\(\d+, (.*)$`)
	familyRE  = regexp.MustCompile(`sa_family=(AF_\w+)`)
	inetRE    = regexp.MustCompile(`sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([0-9.]+)"\)`)
)

// checkTrace returns the provider ports mailproxy connected to, and every
// trace line that reached elsewhere.
func checkTrace(trace string, allowed map[int]bool) (seen map[int]bool, bad []string) {
	seen = map[int]bool{}
	for _, line := range strings.Split(trace, "\n") {
		m := syscallRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		fams := familyRE.FindAllStringSubmatch(m[2], -1)
		if len(fams) == 0 {
			// sendto/sendmsg on a connected socket: no address, the
			// connect was checked.
			if m[1] == "connect" {
				bad = append(bad, "connect without a readable address: "+line)
			}
			continue
		}
		for _, f := range fams {
			if f[1] != "AF_INET" {
				bad = append(bad, f[1]+": "+line)
			}
		}
		for _, in := range inetRE.FindAllStringSubmatch(m[2], -1) {
			port, _ := strconv.Atoi(in[1])
			switch {
			case in[2] != "127.0.0.1":
				bad = append(bad, "not 127.0.0.1: "+line)
			case !allowed[port]:
				bad = append(bad, "not a provider port: "+line)
			case m[1] == "connect":
				seen[port] = true
			}
		}
	}
	return seen, bad
}

func countConnects(trace string) int { return strings.Count(trace, " connect(") }

func keys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}
