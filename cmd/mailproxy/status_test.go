package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStatusPageInRun: `run` serves the status page of [status]; a SIGHUP
// moves it, keeps it where it was when the reload is refused (its new
// address taken), and removes it; the page shows the listener.
func TestStatusPageInRun(t *testing.T) {
	listen, up := freeAddr(t), freeAddr(t)
	page1, page2 := freeAddr(t), freeAddr(t)
	base := listenerConfig("p", up, listen)
	conf := writeFile(t, "status.toml", base+"\n[status]\naddress = \""+page1+"\"\n")
	p := startProcess(t, "run", "-config", conf)
	p.wait(`"msg":"listener.start"`)

	get := func(addr string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	reload := func(doc, result string) {
		t.Helper()
		os.WriteFile(conf, []byte(doc), 0o644)
		p.cmd.Process.Signal(syscall.SIGHUP)
		if l := p.wait(`"msg":"config.reload"`); !strings.Contains(l, `"result":"`+result+`"`) {
			t.Fatalf("reload: %s", l)
		}
	}
	if code, body := get(page1); code != 200 || !strings.Contains(body, `data-address="`+listen+`"`) {
		t.Fatalf("the status page at %s: %d\n%s", page1, code, body)
	}

	reload(base+"\n[status]\naddress = \""+page2+"\"\n", "ok")
	if code, _ := get(page2); code != 200 {
		t.Errorf("after the move, %s: %d", page2, code)
	}
	if code, _ := get(page1); code != 0 {
		t.Errorf("after the move, the old address %s still answers: %d", page1, code)
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	reload(base+"\n[status]\naddress = \""+taken.Addr().String()+"\"\n", "refused")
	if code, _ := get(page2); code != 200 {
		t.Errorf("after a refused reload, %s: %d", page2, code)
	}

	reload(base, "ok")
	if code, _ := get(page2); code != 0 {
		t.Errorf("without [status], %s still answers: %d", page2, code)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("exit: %v", err)
	}
}
