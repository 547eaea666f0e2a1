package main

import (
	"fmt"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
)

// `mailproxy check` goes through a provider's SOCKS5 proxy too.
func TestCheckThroughSOCKS(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir()) // its own CA on 127.0.0.1: its own trust store
	pki := testkit.NewPKI(t)
	addr := tlsServer(t, pki.ServerConfig())
	socks := testkit.NewSOCKS5(t, nil)
	conf := writeFile(t, "check.toml", fmt.Sprintf(`[[provider]]
name = "local"
hosts = ["127.0.0.1"]
imap = "imaps://%s"
ca_file = %q
allow_private_addresses = true
via = "socks5h://%s"
isolate = true

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "local"
`, addr, pki.CAFile, socks.Addr))
	code, out, errOut := run("check", "-config", conf)
	if code != 0 || !strings.Contains(out, "imaps://"+addr+"  PASS") {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	if r := socks.Requests(); len(r) != 1 || r[0].Host+":"+fmt.Sprint(r[0].Port) != addr || r[0].AuthMethod != 2 {
		t.Errorf("the proxy got %+v, want one CONNECT to %s with isolation credentials", r, addr)
	}

	socks.SetReply(5)
	code, out, errOut = run("check", "-config", conf)
	if code != 1 || !strings.Contains(out+errOut, "(SOCKS reply 5)") {
		t.Errorf("check through a refusing proxy: exit %d\n%s%s", code, out, errOut)
	}
}
