package main

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailproxy/internal/testkit"
)

// freeBase finds N such that N+110, N+143 and N+587 are free on 127.0.0.1.
func freeBase(t *testing.T) int {
	t.Helper()
	for base := 20000 + int(time.Now().UnixNano()%200)*100; base < 60000; base += 1000 {
		ok := true
		for _, off := range []int{110, 143, 587} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port base")
	return 0
}

// TestDemo runs `mailproxy demo` and every curl command it prints, in
// order, with the real curl: read over IMAP, send over SMTP, read the sent
// message back over IMAP, list and read over POP3.
func TestDemo(t *testing.T) {
	testkit.NeedTool(t, "curl")
	base := freeBase(t)
	cmd := exec.Command(buildBinary(t), "demo", "-port-base", fmt.Sprint(base))
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "curl ") {
			lines = append(lines, l)
		}
		if strings.HasPrefix(l, "Stop with") {
			break
		}
	}
	protos := map[string]bool{}
	for _, l := range lines {
		for _, p := range []string{"imap://", "pop3://", "smtp://"} {
			if strings.Contains(l, p) {
				protos[p] = true
			}
		}
	}
	if len(protos) != 3 {
		t.Fatalf("demo printed curl lines for %v, want imap, pop3 and smtp:\n%s", protos, strings.Join(lines, "\n"))
	}
	want := []string{
		`LIST () "/" INBOX`,                // list mailboxes
		"Welcome to the mailproxy demo",    // read message 1
		"",                                 // send
		"Subject: Hello through mailproxy", // the sent message, read back
		"3 ",                               // POP3 list: three messages now
		"Welcome to the mailproxy demo",    // POP3 RETR 1
	}
	if len(lines) != len(want) {
		t.Fatalf("demo printed %d curl lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, l := range lines {
		out, err := exec.Command("sh", "-c", l).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want[i]) {
			t.Errorf("step %d: %s\nexit %v, output:\n%s\nwant it to contain %q\naudit log:\n%s", i+1, l, err, out, want[i], stderr.String())
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("demo after SIGINT: %v", err)
	}
	if n := strings.Count(stderr.String(), `"msg":"session.end"`); n < len(lines) {
		t.Errorf("%d session.end events for %d commands", n, len(lines))
	}
	if strings.Contains(stderr.String(), `"result":"fail"`) {
		t.Errorf("a demo login failed:\n%s", stderr.String())
	}
}
