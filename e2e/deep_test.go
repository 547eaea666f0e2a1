//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
)

// deepTarget is one server both `mailproxy check -deep` and testssl.sh
// probe.
type deepTarget struct {
	name     string
	port     int
	starttls string // "", or the protocol of a STARTTLS endpoint (imap, smtp)
}

// testsslVerdicts maps testssl.sh's JSON findings (-p -s -f -4 -Z) onto
// the probes it also runs (all but rsa_kx and preferred_suite). Every finding it writes starts with "offered" when
// the server accepts, "not offered" otherwise; TLS_FALLBACK_SCSV is
// "supported" or "no protocol below ... offered" when a downgrade is
// impossible, "NOT supported" when it is not honoured.
func testsslVerdicts(findings map[string]string) (map[string]bool, error) {
	offered := func(id string) (bool, error) {
		f, ok := findings[id]
		if !ok {
			return false, fmt.Errorf("testssl.sh wrote no %s finding", id)
		}
		return strings.HasPrefix(f, "offered"), nil
	}
	out := map[string]bool{}
	for probe, id := range map[string]string{"sslv3": "SSLv3", "tls1_0": "TLS1", "tls1_1": "TLS1_1",
		"null": "cipherlist_NULL", "export": "cipherlist_EXPORT", "3des": "cipherlist_3DES_IDEA"} {
		v, err := offered(id)
		if err != nil {
			return nil, err
		}
		out[probe] = v
	}
	// mailproxy's cbc counts 3DES (a CBC cipher); testssl.sh files it
	// apart from the other CBC suites ("AVERAGE").
	avg, err := offered("cipherlist_AVERAGE")
	if err != nil {
		return nil, err
	}
	out["cbc"] = avg || out["3des"]
	// -f: DHE is accepted when a finite-field DHE suite is among the
	// forward-secret ones it found (OpenSSL names: DHE-..., EDH-...).
	if _, ok := findings["PFS"]; !ok {
		return nil, fmt.Errorf("testssl.sh wrote no PFS finding")
	}
	out["dhe"] = false
	for _, c := range strings.Fields(findings["PFS_ciphers"]) {
		if strings.HasPrefix(c, "DHE-") || strings.HasPrefix(c, "EDH-") {
			out["dhe"] = true
		}
	}
	// -4: RC4.
	switch rc4 := findings["RC4"]; {
	case rc4 == "not vulnerable":
		out["rc4"] = false
	case strings.HasPrefix(rc4, "VULNERABLE"):
		out["rc4"] = true
	default:
		return nil, fmt.Errorf("testssl.sh's RC4 finding %q is not a verdict", rc4)
	}
	f, ok := findings["fallback_SCSV"]
	switch {
	case !ok:
		return nil, fmt.Errorf("testssl.sh wrote no fallback_SCSV finding")
	case f == "supported", strings.HasPrefix(f, "no protocol below"):
		out["fallback_scsv"] = true
	case strings.HasPrefix(f, "NOT supported"):
		out["fallback_scsv"] = false
	default:
		return nil, fmt.Errorf("testssl.sh's fallback_SCSV finding %q is not a verdict", f)
	}
	return out, nil
}

// TestDeepMatchesTestssl: `mailproxy check -deep` and testssl.sh probe the
// same servers — the suite's Dovecot (IMAP STARTTLS) and Postfix
// (submission, STARTTLS), the Dovecot restricted to RSA key exchange, and
// `openssl s_server`s serving TLS 1.0 only and NULL suites only — and for
// every probe both tools run, they reach the same verdict. testssl.sh is
// slow (30-60 s a server on 2 busy cores; many in parallel is slower
// still), so two run at a time, without DNS lookups, each bounded.
func TestDeepMatchesTestssl(t *testing.T) {
	e := suite.begin(t)
	testssl := testkit.NeedTool(t, "testssl")

	ca, err := certs.NewCA("deep e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1"}, RSA: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.work, "deep")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := certs.WritePair(dir, "server", cert)
	if err != nil {
		t.Fatal(err)
	}
	opensslCases := []struct {
		name string
		args []string
	}{
		{"openssl TLS 1.0 only", []string{"-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:DHE-RSA-AES128-SHA:@SECLEVEL=0"}},
		{"openssl NULL only", []string{"-tls1_2", "-cipher", "NULL-SHA256:NULL-SHA:@SECLEVEL=0"}},
	}
	ports, err := freePorts(len(opensslCases))
	if err != nil {
		t.Fatal(err)
	}
	var targets []deepTarget
	for i, c := range opensslCases {
		argv := append([]string{"openssl", "s_server", "-accept", "127.0.0.1:" + strconv.Itoa(ports[i]),
			"-cert", certFile, "-key", keyFile, "-quiet"}, c.args...)
		p, err := startProc(c.name, filepath.Join(dir, fmt.Sprintf("openssl-%d.out", i)), true, nil, argv...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.stop(time.Second) })
		if err := waitPort(p, ports[i], 10*time.Second); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, deepTarget{name: c.name, port: ports[i]})
	}
	_, imap := e.prov.upstream("imap", modeSTARTTLS)
	_, submission := e.prov.upstream("smtp", modeSTARTTLS)
	targets = append(targets,
		deepTarget{name: "Dovecot imap STARTTLS", port: imap, starttls: "imap"},
		deepTarget{name: "Postfix submission STARTTLS", port: submission, starttls: "smtp"},
		deepTarget{name: "Dovecot RSA key exchange only", port: e.prov.ports.RSAIMAPS},
	)

	check := route{mp: e.mp, proto: "imap, smtp", desc: "mailproxy check -deep and testssl.sh on the same servers"}
	s := e.step(t, "mailproxy check -deep, testssl.sh", check, "probe each server with both tools")
	type outcome struct {
		mine, theirs *result
		jsonFile     string
	}
	results := make([]outcome, len(targets))
	var wg sync.WaitGroup
	slots := make(chan struct{}, 2)
	for i, tg := range targets {
		addr := "127.0.0.1:" + strconv.Itoa(tg.port)
		mode := []string{"-tls", addr}
		if tg.starttls != "" {
			mode = []string{"-starttls", "-proto", tg.starttls, addr}
		}
		results[i].mine = s.run(cmdOpts{}, append([]string{e.bin, "check", "-config", e.mp.cfg, "-deep", "-json"}, mode...)...)
		jsonFile := filepath.Join(dir, fmt.Sprintf("testssl-%d.json", i))
		results[i].jsonFile = jsonFile
		argv := []string{testssl, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none",
			"--connect-timeout", "10", "--openssl-timeout", "10", "-p", "-s", "-f", "-4", "-Z", "--jsonfile", jsonFile}
		if tg.starttls != "" {
			argv = append(argv, "-t", tg.starttls)
		}
		argv = append(argv, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			results[i].theirs = s.run(cmdOpts{timeout: 4 * time.Minute}, argv...)
		}()
	}
	wg.Wait()

	compared := 0
	for i, tg := range targets {
		mine, theirs := results[i].mine, results[i].theirs
		var line struct {
			Deep map[string]any `json:"deep"`
		}
		if err := json.Unmarshal(mine.stdout, &line); err != nil || line.Deep == nil {
			s.Fatalf("%s: mailproxy check -deep -json printed no deep object (%v)\n%s", tg.name, err, mine.describe())
		}
		if e, ok := line.Deep["error"]; ok {
			s.Fatalf("%s: the probes were refused: %v\n%s", tg.name, e, mine.describe())
		}
		if u, ok := line.Deep["unknown"]; ok {
			s.Fatalf("%s: probes learned nothing: %v\n%s", tg.name, u, mine.describe())
		}
		b, err := os.ReadFile(results[i].jsonFile)
		if err != nil {
			s.Fatalf("%s: testssl.sh wrote no JSON (%v)\n%s", tg.name, err, theirs.describe())
		}
		var findings []struct{ ID, Finding string }
		if err := json.Unmarshal(b, &findings); err != nil {
			s.Fatalf("%s: testssl.sh's JSON: %v", tg.name, err)
		}
		byID := map[string]string{}
		for _, f := range findings {
			byID[f.ID] = f.Finding
		}
		theirVerdicts, err := testsslVerdicts(byID)
		if err != nil {
			s.Fatalf("%s: %v\n%s", tg.name, err, theirs.describe())
		}
		var diff []string
		for probe, v := range theirVerdicts {
			if line.Deep[probe] != v {
				diff = append(diff, fmt.Sprintf("%s: mailproxy %v, testssl.sh %v", probe, line.Deep[probe], v))
			}
			compared++
		}
		if len(diff) > 0 {
			s.Errorf("%s: the tools disagree:\n  %s\nmailproxy: %s\ntestssl.sh findings: %v", tg.name, strings.Join(diff, "\n  "), mine.stdout, byID)
		}
		t.Logf("%s: %d verdicts agree; mailproxy says %v", tg.name, len(theirVerdicts), line.Deep["verdict"])
	}
	// The servers were chosen so that the comparison covers both answers
	// of most probes; make sure the fixtures did what they were meant to.
	wantAccepted := map[string][]string{"openssl TLS 1.0 only": {"tls1_0", "dhe", "cbc"}, "openssl NULL only": {"null"},
		"Dovecot RSA key exchange only": {"rsa_kx"}}
	for i, tg := range targets {
		var line struct{ Deep map[string]any }
		json.Unmarshal(results[i].mine.stdout, &line)
		for _, probe := range wantAccepted[tg.name] {
			if line.Deep[probe] != true {
				s.Errorf("%s: mailproxy says %s = %v; the fixture is wrong", tg.name, probe, line.Deep[probe])
			}
		}
	}
	if compared == 0 {
		s.Fatalf("nothing was compared")
	}
}
