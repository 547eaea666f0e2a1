package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
)

// opensslServe runs `openssl s_server` with an RSA certificate issued by
// pki's CA on a free port, and returns its address.
func opensslServe(t *testing.T, pki *testkit.PKI, args ...string) string {
	t.Helper()
	bin := testkit.NeedTool(t, "openssl")
	cert, err := pki.CA.Issue(rsaLeaf())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := certs.WritePair(t.TempDir(), "server", cert)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, append([]string{"s_server", "-accept", addr, "-cert", certFile, "-key", keyFile, "-quiet"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
	}
	t.Fatalf("openssl s_server did not start: %s", stderr.String())
	return ""
}

// check -deep against a server that accepts RSA key exchange and CBC:
// the policy's check fails (cipher), the probes say what the server
// accepts, in text and in JSON, and every probe connection is audited.
func TestCheckDeep(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	pki := testkit.NewPKI(t)
	addr := opensslServe(t, pki, "-tls1_2", "-cipher", "AES128-SHA:AES128-GCM-SHA256")
	audit := t.TempDir() + "/audit.jsonl"
	conf := writeFile(t, "deep.toml", fmt.Sprintf(`[log]
audit = %q

[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, audit, addr, pki.CAFile))

	code, out, errOut := run("check", "-config", conf, "-deep")
	if code != 1 {
		t.Errorf("exit %d, want 1 (the policy refuses RSA key exchange)\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"FAIL  reason=cipher", "deep probes", "    sslv3            refused",
		"    rsa_kx           accepted  TLS1.2 TLS_RSA_WITH_AES_128_", "    cbc              accepted  TLS1.2 TLS_RSA_WITH_AES_128_CBC_SHA",
		"    dhe              refused   (", "    fallback_scsv    honoured  (", "  verdict      WEAK: accepts RSA key exchange; still offers CBC suites"} {
		if !strings.Contains(out, want) {
			t.Errorf("check -deep output lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = run("check", "-config", conf, "-deep", "-json")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 {
		t.Fatalf("check -deep -json: exit %d, %v\n%s", code, err, out)
	}
	d, _ := r["deep"].(map[string]any)
	var keys []string
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"3des", "cbc", "dhe", "export", "fallback_scsv", "null", "preferred_suite", "rc4", "rsa_kx", "sslv3", "tls1_0", "tls1_1", "verdict"}; !slices.Equal(keys, want) {
		t.Errorf("deep keys %v, want %v", keys, want)
	}
	if d["rsa_kx"] != true || d["cbc"] != true || d["sslv3"] != false || d["dhe"] != false || d["fallback_scsv"] != true ||
		!strings.HasPrefix(d["preferred_suite"].(string), "TLS_RSA_WITH_AES_128_") {
		t.Errorf("deep = %v", d)
	}

	// Every probe was an audited upstream.connect; no upstream.tls (no
	// handshake completed) and no auth (no login).
	b, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if n := strings.Count(log, `"msg":"upstream.connect"`); n < 2*12 {
		t.Errorf("%d upstream.connect events for two deep checks:\n%s", n, log)
	}
	if strings.Contains(log, `"msg":"upstream.tls"`) || strings.Contains(log, `"msg":"auth"`) {
		t.Errorf("a probe completed a handshake or logged in:\n%s", log)
	}
}
