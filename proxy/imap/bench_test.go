package imap_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailproxy/internal/testkit"
)

// fetchAll sends a FETCH of message 1 and reads up to the tagged OK,
// returning the bytes read.
func fetchAll(tb testing.TB, rw io.ReadWriter, br *bufio.Reader, tag string) int64 {
	if _, err := fmt.Fprintf(rw, "%s FETCH 1 BODY.PEEK[]\r\n", tag); err != nil {
		tb.Fatal(err)
	}
	var n int64
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			tb.Fatal(err)
		}
		n += int64(len(line))
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				tb.Fatalf("fetch: %q", line)
			}
			return n
		}
		if i := strings.LastIndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}\r\n") {
			size, err := strconv.ParseInt(line[i+1:len(line)-3], 10, 64)
			if err != nil {
				tb.Fatalf("literal size in %q", line)
			}
			m, err := io.CopyN(io.Discard, br, size)
			n += m
			if err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// loginSelect logs in and selects INBOX on a raw connection.
func loginSelect(tb testing.TB, rw io.ReadWriter, br *bufio.Reader) {
	if _, err := br.ReadString('\n'); err != nil { // greeting
		tb.Fatal(err)
	}
	quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(password)
	fmt.Fprintf(rw, "l LOGIN %s \"%s\"\r\ns SELECT INBOX\r\n", user, quoted)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			tb.Fatal(err)
		}
		if strings.HasPrefix(line, "l NO") || strings.HasPrefix(line, "s NO") {
			tb.Fatalf("login/select: %q", line)
		}
		if strings.HasPrefix(line, "s OK") {
			return
		}
	}
}

// streamingProvider is a minimal IMAP provider over TLS that answers FETCH
// with one fixed message straight from memory, so that the benchmark
// measures the transport (direct TLS, or TLS plus the relay), not the cost
// of a test server building its response.
func streamingProvider(tb testing.TB, pki *testkit.PKI, body []byte) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerConfig())
	if err != nil {
		tb.Fatal(err)
	}
	testkit.Serve(tb, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		bw := bufio.NewWriterSize(c, 64<<10)
		bw.WriteString("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n")
		bw.Flush()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			if len(f) < 2 {
				return
			}
			tag, cmd := f[0], strings.ToUpper(f[1])
			switch cmd {
			case "SELECT":
				fmt.Fprintf(bw, "* 1 EXISTS\r\n%s OK [READ-WRITE] done\r\n", tag)
			case "FETCH":
				fmt.Fprintf(bw, "* 1 FETCH (BODY[] {%d}\r\n", len(body))
				bw.Write(body)
				fmt.Fprintf(bw, ")\r\n%s OK done\r\n", tag)
			case "LOGOUT":
				fmt.Fprintf(bw, "* BYE\r\n%s OK done\r\n", tag)
				bw.Flush()
				return
			default:
				fmt.Fprintf(bw, "%s OK done\r\n", tag)
			}
			bw.Flush()
		}
	})
	return "imaps://" + ln.Addr().String()
}

// BenchmarkFetch64MiB fetches one 64 MiB message from the same TLS provider
// directly and through the relay, alternately, in the same run, and reports
// each throughput and their ratio (the target is relay/direct >= 0.90).
//
//	go test -run '^$' -bench Fetch64MiB -benchtime 10x ./proxy/imap/
func BenchmarkFetch64MiB(b *testing.B) {
	const size = 64 << 20
	pki := testkit.NewPKI(b)
	body := []byte("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", size/78))
	endpoint := streamingProvider(b, pki, body)
	p := start(b, pki, endpoint)
	compareFetch(b, pki, endpoint, p.Addr, len(body), "relay")
}

// compareFetch fetches message 1 alternately straight from the TLS
// provider at endpoint and through the plaintext relay at relayAddr (which
// goes first alternates, so neither always pays for the other's garbage),
// and reports each throughput and their ratio.
func compareFetch(b *testing.B, pki *testkit.PKI, endpoint, relayAddr string, size int, name string) {
	direct, err := tls.Dial("tcp", strings.TrimPrefix(endpoint, "imaps://"), &tls.Config{RootCAs: pki.CA.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	dbr := bufio.NewReaderSize(direct, 64<<10)
	loginSelect(b, direct, dbr)
	relayed, err := net.Dial("tcp", relayAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer relayed.Close()
	rbr := bufio.NewReaderSize(relayed, 64<<10)
	loginSelect(b, relayed, rbr)

	var dDur, rDur time.Duration
	var n int64
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if i%2 == 0 {
			n = fetchAll(b, direct, dbr, "d"+strconv.Itoa(i))
			t1 := time.Now()
			fetchAll(b, relayed, rbr, "r"+strconv.Itoa(i))
			dDur += t1.Sub(t0)
			rDur += time.Since(t1)
		} else {
			fetchAll(b, relayed, rbr, "r"+strconv.Itoa(i))
			t1 := time.Now()
			n = fetchAll(b, direct, dbr, "d"+strconv.Itoa(i))
			rDur += t1.Sub(t0)
			dDur += time.Since(t1)
		}
	}
	b.StopTimer()
	mibs := func(d time.Duration) float64 { return float64(n) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(dDur), "direct-MiB/s")
	b.ReportMetric(mibs(rDur), name+"-MiB/s")
	b.ReportMetric(mibs(rDur)/mibs(dDur), name+"/direct")
}

// BenchmarkFetch64MiBStunnel is BenchmarkFetch64MiB with stunnel (client
// mode, chain verified) in place of mailproxy, for comparison on the same
// machine. It skips when stunnel is not installed.
//
//	go test -run '^$' -bench Fetch64MiBStunnel -benchtime 10x ./proxy/imap/
func BenchmarkFetch64MiBStunnel(b *testing.B) {
	const size = 64 << 20
	bin, err := exec.LookPath("stunnel")
	if err != nil {
		b.Skip("stunnel not installed")
	}
	pki := testkit.NewPKI(b)
	body := []byte("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", size/78))
	endpoint := streamingProvider(b, pki, body)
	providerAddr := strings.TrimPrefix(endpoint, "imaps://")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(b.TempDir(), "stunnel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("foreground = yes\npid =\n[imap]\nclient = yes\naccept = %s\nconnect = %s\nCAfile = %s\nverifyChain = yes\ncheckIP = 127.0.0.1\n",
		addr, providerAddr, pki.CAFile)), 0o644)
	cmd := exec.Command(bin, conf)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitListening(b, addr)
	compareFetch(b, pki, endpoint, addr, len(body), "stunnel")
}

// BenchmarkIdleSessionMemory runs mailproxy as its own process, opens 1,000
// IMAP sessions through it that log in and then stay idle, and reports the
// growth of the process's resident memory per session (the target is at
// most 64 KiB; stunnel holds about 134 KB).
//
//	go test -run '^$' -bench IdleSessionMemory -benchtime 1x ./proxy/imap/
func BenchmarkIdleSessionMemory(b *testing.B) {
	const sessions = 1000
	pki := testkit.NewPKI(b)
	prov := startMemProvider(b, pki, "imaps", message)

	dir := b.TempDir()
	bin := filepath.Join(dir, "mailproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "mailproxy/cmd/mailproxy").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "mailproxy.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`[log]
audit = %q
[limits]
max_sessions = %d
max_sessions_per_client = %d
sessions_per_minute_per_client = 1000000
[[provider]]
name = "bench"
hosts = ["127.0.0.1"]
imap = %q
ca_file = %q
allow_private_addresses = true
[[listen]]
protocol = "imap"
address = %q
provider = "bench"
`, filepath.Join(dir, "audit.log"), sessions+10, sessions+10, prov.endpoint, pki.CAFile, addr)), 0o644)

	for i := 0; i < b.N; i++ {
		measureIdle(b, exec.Command(bin, "run", "-config", conf), addr, sessions)
	}
}

// measureIdle starts a relay process, opens one warm-up session, then
// sessions that log in and stay idle, and reports the growth of the
// process's resident memory per session.
func measureIdle(b *testing.B, cmd *exec.Cmd, addr string, sessions int) {
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	waitListening(b, addr)
	// Warm up: one session in and out, so that one-time costs (TLS roots,
	// code pages) are in the baseline.
	warm := openSession(b, addr)
	warm.Close()
	time.Sleep(500 * time.Millisecond)
	before := rss(b, cmd.Process.Pid)
	conns := make([]net.Conn, 0, sessions)
	for j := 0; j < sessions; j++ {
		conns = append(conns, openSession(b, addr))
	}
	time.Sleep(2 * time.Second)
	after := rss(b, cmd.Process.Pid)
	b.ReportMetric(float64(after-before)/float64(sessions)/1024, "KiB/session")
	b.ReportMetric(float64(after)/(1<<20), "MiB-rss-total")
	for _, c := range conns {
		c.Close()
	}
}

// BenchmarkIdleSessionMemoryStunnel measures the same for stunnel in
// client mode (plaintext in, TLS to the same provider, chain verified), for
// comparison on the same machine. It skips when stunnel is not installed.
//
//	go test -run '^$' -bench IdleSessionMemoryStunnel -benchtime 1x ./proxy/imap/
func BenchmarkIdleSessionMemoryStunnel(b *testing.B) {
	const sessions = 1000
	bin, err := exec.LookPath("stunnel")
	if err != nil {
		b.Skip("stunnel not installed")
	}
	pki := testkit.NewPKI(b)
	prov := startMemProvider(b, pki, "imaps", message)
	dir := b.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "stunnel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`foreground = yes
pid =
[imap]
client = yes
accept = %s
connect = %s
CAfile = %s
verifyChain = yes
checkIP = 127.0.0.1
`, addr, strings.TrimPrefix(prov.endpoint, "imaps://"), pki.CAFile)), 0o644)
	for i := 0; i < b.N; i++ {
		measureIdle(b, exec.Command(bin, conf), addr, sessions)
	}
}

func openSession(tb testing.TB, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(c)
	loginSelect(tb, c, br)
	return c
}

func waitListening(tb testing.TB, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("mailproxy did not start listening")
}

// rss reads a process's resident set size in bytes.
func rss(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Skip("no /proc: cannot measure RSS")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}
