package pop3_test

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/proxy"
)

// poplibScript is a POP3 client nobody here wrote: Python's poplib. It
// logs in (after STLS when POP_CAFILE is set), checks the greeting has no
// APOP timestamp, retrieves message 1 (poplib undoes the dot-stuffing),
// deletes message 2 and quits. The password comes from the environment,
// never from the command line.
const poplibScript = `
import os, poplib, ssl, sys
host, port = os.environ["POP_ADDR"].rsplit(":", 1)
p = poplib.POP3(host, int(port), timeout=10)
if b"<" in p.getwelcome():
    sys.exit("the greeting offers APOP: %r" % p.getwelcome())
if os.environ.get("POP_CAFILE"):
    p.stls(ssl.create_default_context(cafile=os.environ["POP_CAFILE"]))
caps = p.capa()
if "USER" not in caps:
    sys.exit("capabilities before login %r" % sorted(caps))
p.user(os.environ["POP_USER"])
p.pass_(os.environ["POP_PASS"])
caps = p.capa()  # the provider's own list now
if "UIDL" not in caps:
    sys.exit("capabilities after login %r" % sorted(caps))
count, size = p.stat()
if count != 2:
    sys.exit("STAT says %d messages" % count)
resp, lines, octets = p.retr(1)
sys.stdout.buffer.write(b"".join(l + b"\r\n" for l in lines))
p.dele(2)
p.quit()
`

// TestPoplib retrieves a message through mailproxy with Python's poplib,
// on a plain local listener and with local STLS.
func TestPoplib(t *testing.T) {
	python := testkit.NeedTool(t, "python3")
	for _, mode := range []proxy.LocalSecurity{proxy.LocalNone, proxy.LocalSTARTTLS} {
		t.Run(string(mode), func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startProvider(t, pki, "pop3", pop3server.Options{})
			p := start(t, pki, prov.endpoint, localTLS(pki, mode))
			cmd := exec.Command(python, "-c", poplibScript)
			cmd.Env = append(os.Environ(), "POP_ADDR="+p.Addr, "POP_USER="+user, "POP_PASS="+password)
			if mode == proxy.LocalSTARTTLS {
				cmd.Env = append(cmd.Env, "POP_CAFILE="+pki.CAFile)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("poplib through mailproxy: %v\n%s", err, stderr.String())
			}
			if got := stdout.String(); got != message {
				t.Errorf("poplib retrieved\n%q, want\n%q", got, message)
			}
			if got := prov.alice.Messages(); len(got) != 1 || got[0] != prov.uids[0] {
				t.Errorf("after poplib's DELE 2 and QUIT the provider holds %v, want [%s]", got, prov.uids[0])
			}
			checkAudit(t, p, 1, sessionEvents)
		})
	}
}
