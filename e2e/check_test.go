//go:build e2e

package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// checkLine is one endpoint of `mailproxy check -json`.
type checkLine struct {
	Endpoint   string `json:"endpoint"`
	OK         bool   `json:"ok"`
	TLSVersion string `json:"tls_version"`
	Reason     string `json:"reason"`
	Detail     string `json:"detail"`
	Error      string `json:"error"`
}

func parseCheck(s *step, r *result) []checkLine {
	s.t.Helper()
	var out []checkLine
	for _, line := range strings.Split(strings.TrimSpace(string(r.stdout)), "\n") {
		var c checkLine
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			s.Fatalf("mailproxy check -json printed a line that is not JSON (%v)\n%s", err, r.describe())
		}
		out = append(out, c)
	}
	return out
}

// TestCheck: `mailproxy check` passes against every Dovecot and Postfix
// port of the provider (implicit TLS and STARTTLS) and prints TLS1.3; it
// fails with reason "cipher" against a Dovecot that offers TLS 1.2 with
// RSA key exchange only.
func TestCheck(t *testing.T) {
	e := suite.begin(t)
	check := route{mp: e.mp, proto: "imap, pop3, smtp", desc: "every endpoint of " + e.mp.cfg}

	s := e.step(t, "mailproxy check", check, "check every endpoint of both providers")
	r := s.run(cmdOpts{}, e.bin, "check", "-config", e.mp.cfg)
	if r.code != 0 {
		s.Fatalf("mailproxy check should pass\n%s", r.describe())
	}
	if n := strings.Count(string(r.stdout), "  PASS\n"); n != 6 {
		s.Fatalf("want 6 endpoints to PASS, %d did\n%s", n, r.describe())
	}
	if n := strings.Count(string(r.stdout), "tls_version  TLS1.3\n"); n != 6 {
		s.Fatalf("want 6 endpoints to print tls_version TLS1.3, %d did\n%s", n, r.describe())
	}
	r = s.must(cmdOpts{}, e.bin, "check", "-config", e.mp.cfg, "-json")
	seen := map[string]bool{}
	for _, c := range parseCheck(s, r) {
		if !c.OK || c.TLSVersion != "TLS1.3" {
			s.Fatalf("endpoint %s: ok=%v tls_version=%q, want ok with TLS1.3\n%s", c.Endpoint, c.OK, c.TLSVersion, r.describe())
		}
		seen[c.Endpoint] = true
	}
	for _, proto := range []string{"imap", "pop3", "smtp"} {
		for _, mode := range modes {
			if up, _ := e.prov.upstream(proto, mode); !seen[up] {
				s.Fatalf("mailproxy check did not check %s\n%s", up, r.describe())
			}
		}
	}

	rsa := "127.0.0.1:" + strconv.Itoa(e.prov.ports.RSAIMAPS)
	check.proto, check.desc = "imap", "imaps://"+rsa+" (Dovecot: TLS 1.2, RSA key exchange only)"
	s = e.step(t, "mailproxy check", check, "check a Dovecot restricted to TLS 1.2 with RSA key exchange")
	text := s.run(cmdOpts{}, e.bin, "check", "-config", e.mp.cfg, "-tls", rsa)
	r = s.run(cmdOpts{}, e.bin, "check", "-config", e.mp.cfg, "-json", "-tls", rsa)
	// Whatever mailproxy says, the server must have refused for the
	// cipher: otherwise the fixture is wrong, not mailproxy.
	s.waitLog(e.prov.dovecotRSALog, "the restricted Dovecot's refusal", "no shared cipher")
	if r.code != 1 {
		s.Fatalf("mailproxy check should fail (exit 1)\n%s", r.describe())
	}
	cs := parseCheck(s, r)
	if len(cs) != 1 || cs[0].OK || cs[0].Reason != "cipher" {
		s.Fatalf("mailproxy check should fail with reason \"cipher\"\n%s\n--- text form ---\n%s", r.describe(), text.describe())
	}
	if !strings.Contains(string(text.stdout), "reason=cipher") {
		s.Fatalf("the text form should print reason=cipher\n%s", text.describe())
	}
}
