package smtp_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
)

// smtplibScript is an app nobody here wrote: Python's smtplib, reading the
// message from stdin and the password from the environment.
const smtplibScript = `
import os, smtplib, sys
host, port = os.environ["MP_ADDR"].rsplit(":", 1)
msg = sys.stdin.buffer.read()
with smtplib.SMTP(host, int(port), local_hostname="pythons-pc.example", timeout=20) as s:
    s.ehlo()
    if not s.has_extn("auth") or not s.has_extn("8bitmime"):
        sys.exit("EHLO reply lacks AUTH or 8BITMIME")
    s.login(os.environ["MP_USER"], os.environ["MP_PASS"])
    refused = s.sendmail(os.environ["MP_USER"], ["bob@example.test", "zoë@example.test"], msg,
                         mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    if refused:
        sys.exit("refused recipients: %r" % sorted(refused))
`

// TestPythonSmtplib sends a message through mailproxy with smtplib.
func TestPythonSmtplib(t *testing.T) {
	python := testkit.NeedTool(t, "python3")
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtp")
	// smtplib sends AUTH PLAIN as ASCII only.
	const asciiPassword = "Pa55-w0rd \"secret\" for smtplib"
	prov.set(func(p *provider) { p.pass = asciiPassword })
	p := start(t, pki, prov.endpoint)

	cmd := exec.Command(python, "-c", smtplibScript)
	cmd.Env = append(os.Environ(), "MP_ADDR="+p.Addr, "MP_USER="+user, "MP_PASS="+asciiPassword)
	cmd.Stdin = strings.NewReader(message)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, strings.ReplaceAll(string(out), asciiPassword, "***"))
	}
	got := prov.received()
	if len(got) != 1 {
		t.Fatalf("the provider received %d messages, want 1", len(got))
	}
	if string(got[0].data) != message || len(got[0].to) != 2 || !got[0].opts.UTF8 {
		t.Errorf("the provider received %q to %q (options %+v), want the message as sent", got[0].data, got[0].to, got[0].opts)
	}
	checkEHLONames(t, prov)
	checkAudit(t, p, sessionEvents)
	p.Audit.NoSecret(t, asciiPassword)
}
