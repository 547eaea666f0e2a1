package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"mailproxy/internal/demo"
	"mailproxy/internal/testkit"
	"mailproxy/tlsconf"
)

// appsScript is three apps nobody here wrote — Python's imaplib over local
// implicit TLS, poplib with stls() and smtplib with starttls() — each
// verifying mailproxy's certificate against the file `mailproxy cert`
// printed, host name included.
const appsScript = `
import imaplib, os, poplib, smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=os.environ["CERT"])
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
host = "127.0.0.1"
u, p = os.environ["MP_USER"], os.environ["MP_PASS"]

m = imaplib.IMAP4_SSL(host, int(os.environ["IMAP_PORT"]), ssl_context=ctx)
m.login(u, p)
typ, data = m.select("INBOX")
assert typ == "OK", data
m.logout()

s = smtplib.SMTP(host, int(os.environ["SMTP_PORT"]), local_hostname="pythons-pc.example")
s.starttls(context=ctx)
s.login(u, p)
s.sendmail("demo@demo.test", ["demo@demo.test"], b"Subject: via local STARTTLS\r\n\r\nhello\r\n")
s.quit()

pop = poplib.POP3(host, int(os.environ["POP3_PORT"]))
pop.stls(ctx)
pop.user(u)
pop.pass_(p)
count, _ = pop.stat()
assert count == 3, count
pop.quit()
print("all three apps verified the certificate")
`

func TestLocalTLSWithExportedCertificate(t *testing.T) {
	python := testkit.NeedTool(t, "python3")
	prov, err := demo.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	xdg := t.TempDir()
	env := append(os.Environ(), "XDG_CONFIG_HOME="+xdg, "XDG_DATA_HOME="+t.TempDir())

	imapAddr, pop3Addr, smtpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	conf := writeFile(t, "local.toml", fmt.Sprintf(`[[provider]]
name = "demo"
hosts = ["127.0.0.1"]
imap = %q
pop3 = %q
smtp = %q
ca_file = %q
allow_private_addresses = true

[[listen]]
protocol = "imap"
address = %q
provider = "demo"
local_security = "tls"

[[listen]]
protocol = "pop3"
address = %q
provider = "demo"
local_security = "starttls"

[[listen]]
protocol = "smtp"
address = %q
provider = "demo"
local_security = "starttls"
`, prov.IMAP, prov.POP3, prov.SMTP, prov.CAFile, imapAddr, pop3Addr, smtpAddr))

	// mailproxy cert makes the certificate and prints it.
	cmd := exec.Command(buildBinary(t), "cert", "-config", conf)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mailproxy cert: %v", err)
	}
	block, rest := pem.Decode(out)
	if block == nil || !bytes.Contains(rest, []byte("SHA-256: ")) {
		t.Fatalf("mailproxy cert printed:\n%s", out)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rest, []byte(tlsconf.Fingerprint(leaf))) {
		t.Error("the printed fingerprint is not the certificate's")
	}
	certFile := filepath.Join(t.TempDir(), "mailproxy.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(block), 0o644)
	keyInfo, err := os.Stat(filepath.Join(xdg, "mailproxy", tlsconf.LocalKeyFile))
	if err != nil || keyInfo.Mode().Perm() != 0o600 {
		t.Errorf("local key: %v, %v", keyInfo, err)
	}

	p := startProcessEnv(t, env, "run", "-config", conf)
	for i := 0; i < 3; i++ {
		p.wait(`"msg":"listener.start"`)
	}
	py := exec.Command(python, "-c", appsScript)
	port := func(a string) string { return a[strings.LastIndexByte(a, ':')+1:] }
	py.Env = append(os.Environ(), "CERT="+certFile, "MP_USER="+demo.User, "MP_PASS="+demo.Password,
		"IMAP_PORT="+port(imapAddr), "POP3_PORT="+port(pop3Addr), "SMTP_PORT="+port(smtpAddr))
	if out, err := py.CombinedOutput(); err != nil {
		t.Fatalf("python apps: %v\n%s\naudit:\n%s", err, out, p.logText())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	if log := p.logText(); strings.Count(log, `"result":"ok"`) != 3 {
		t.Errorf("want three successful logins in:\n%s", log)
	}
}
