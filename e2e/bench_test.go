//go:build e2e

package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The benchmarks of this file compare three ways for an app to reach the
// suite's Dovecot, in the same run and interleaved round by round (each
// round rotates the order, so that no path always goes first):
//
//   - mailproxy: plaintext to the suite's mailproxy, which speaks TLS to
//     Dovecot's imaps port;
//   - stunnel: plaintext to stunnel in client mode (Debian's stunnel4,
//     chain verified, no session resumption, as mailproxy has none);
//   - direct: the client itself speaks TLS to Dovecot's imaps port.
//
//	go test -tags e2e -run '^$' -bench 'BulkFetch7MB' -benchtime 5x -count 3 ./e2e/
//	go test -tags e2e -run '^$' -bench 'LoginSelect' -benchtime 100x -count 3 ./e2e/
//
// With E2E_BENCH_BASELINE=/path/to/mailproxy a second mailproxy, built
// from another commit, runs as a fourth path "baseline" in the same rounds.
//
// Each reports the median over its rounds (b.N) per path; the ranges are
// logged.

// benchPath is one way to Dovecot's IMAP service.
type benchPath struct {
	name string
	port int
	tls  bool // the client speaks TLS itself (direct)
	pid  int  // the process in the middle, 0 for direct
}

// benchPaths starts stunnel in client mode in front of Dovecot's imaps
// port (stopped at the end of b) and returns the three paths.
func benchPaths(b *testing.B, e *env) []benchPath {
	b.Helper()
	bin, err := exec.LookPath("stunnel4")
	if err != nil {
		if bin, err = exec.LookPath("stunnel"); err != nil {
			b.Skip("stunnel not installed (apt package stunnel4)")
		}
	}
	ports, err := freePorts(1)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	conf := filepath.Join(dir, "stunnel.conf")
	cfg := fmt.Sprintf(`foreground = yes
pid =
output = %s
[imap]
client = yes
accept = 127.0.0.1:%d
connect = 127.0.0.1:%d
CAfile = %s
verifyChain = yes
checkIP = 127.0.0.1
sessionResume = no
`, filepath.Join(dir, "stunnel.log"), ports[0], e.prov.ports.IMAPS, e.prov.caFile)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	st, err := startProc("stunnel", filepath.Join(dir, "stunnel.out"), true, nil, bin, conf)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := st.stop(5 * time.Second); err != nil {
			b.Error(err)
		}
	})
	if err := waitPort(st, ports[0], 10*time.Second); err != nil {
		b.Fatal(err)
	}
	paths := []benchPath{
		{name: "mailproxy", port: e.mp.ports["imap/"+modeTLS], pid: e.mp.proc.pid()},
		{name: "stunnel", port: ports[0], pid: st.pid()},
		{name: "direct", port: e.prov.ports.IMAPS, tls: true},
	}
	if bin := os.Getenv("E2E_BENCH_BASELINE"); bin != "" {
		// A second mailproxy binary (another commit) in the same rounds:
		// on a busy machine an A/B comparison needs the interleaving.
		other := *e
		other.bin = bin
		mp, err := other.startMailproxy("mailproxy-baseline", false)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := mp.stop(); err != nil {
				b.Error(err)
			}
		})
		paths = append(paths, benchPath{name: "baseline", port: mp.ports["imap/"+modeTLS], pid: mp.proc.pid()})
	}
	return paths
}

// cpuTime is the user plus system time a process (all its threads, the
// ended ones included) has used so far, from /proc/PID/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatalf("reading the CPU time of pid %d: %v", pid, err)
	}
	// The command name (field 2) may hold spaces; count after its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// bulkMessage is the 7 MB message of BenchmarkBulkFetch7MB, uploaded once
// per run straight to Dovecot.
var bulkMessage struct {
	once    sync.Once
	err     error
	mailbox string
	uid     int
	size    int
}

var appendUIDRE = regexp.MustCompile(`\[APPENDUID \d+ (\d+)\]`)

// uploadBulkMessage puts one message of about 7 MB (a base64 attachment of
// random bytes) into a mailbox of its own of alice's, straight over TLS,
// and returns the mailbox, the message's UID and its size.
func uploadBulkMessage(b *testing.B, e *env) (string, int, int) {
	b.Helper()
	m := &bulkMessage
	m.once.Do(func() {
		var sb strings.Builder
		sb.WriteString("From: Alice <" + alice.name + ">\r\nTo: Alice <" + alice.name + ">\r\nSubject: bulk\r\n")
		sb.WriteString("Message-ID: <bulk-" + strconv.FormatUint(rand.Uint64(), 16) + "@e2e.provider.test>\r\n")
		sb.WriteString("MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		r := rand.NewChaCha8([32]byte{'b', 'u', 'l', 'k'})
		line := make([]byte, 57)
		for sb.Len() < 7_000_000 {
			r.Read(line)
			sb.WriteString(base64.StdEncoding.EncodeToString(line) + "\r\n")
		}
		raw := []byte(sb.String())
		m.mailbox = fmt.Sprintf("E2E-Bulk-%08x", rand.Uint32())
		m.size = len(raw)
		c, err := dialBench(e.prov.ports.IMAPS, true, e.prov.caFile)
		if err != nil {
			m.err = err
			return
		}
		defer c.close()
		if err := c.login(alice); err != nil {
			m.err = err
			return
		}
		if _, err := c.cmd("CREATE " + quote(m.mailbox)); err != nil {
			m.err = err
			return
		}
		status, err := c.appendLiteral(m.mailbox, raw)
		if err != nil {
			m.err = err
			return
		}
		// RFC 4315: "OK [APPENDUID uidvalidity uid] ...".
		if u := appendUIDRE.FindStringSubmatch(status); u != nil {
			m.uid, _ = strconv.Atoi(u[1])
		}
		if m.uid == 0 {
			m.err = fmt.Errorf("APPEND gave no APPENDUID: %q", status)
		}
	})
	if m.err != nil {
		b.Fatalf("uploading the bulk message: %v", m.err)
	}
	return m.mailbox, m.uid, m.size
}

// BenchmarkBulkFetch7MB: curl fetches a 7 MB message ten times over one
// IMAP session (ten URLs on one command line; curl reuses the connection,
// and the benchmark checks in Dovecot's log that there was one login per
// run) through mailproxy, through stunnel and directly. Each round (b.N)
// runs all three. It reports per path the median MB/s (10^6 bytes of the
// message per second, as curl counts them) and the CPU time per byte of
// the process in the middle and of curl, and the median per-round ratios
// of the time taken.
func BenchmarkBulkFetch7MB(b *testing.B) {
	if suite == nil {
		b.Skip("no e2e environment")
	}
	e := suite
	const fetches = 10
	mailbox, uid, size := uploadBulkMessage(b, e)
	paths := benchPaths(b, e)
	secs := map[string][]float64{}
	mid := map[string]time.Duration{}
	cli := map[string]time.Duration{}
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range paths {
			p := paths[(i+k)%len(paths)]
			d, midCPU, curlCPU := bulkRound(b, e, p, mailbox, uid, size, fetches)
			secs[p.name] = append(secs[p.name], d.Seconds())
			mid[p.name] += midCPU
			cli[p.name] += curlCPU
		}
		bytes += int64(size) * fetches
	}
	b.StopTimer()
	perRound := float64(size) * fetches
	for _, p := range paths {
		s := secs[p.name]
		b.ReportMetric(perRound/1e6/median(s), p.name+"-MB/s")
		if p.pid != 0 {
			b.ReportMetric(float64(mid[p.name].Nanoseconds())/float64(bytes), p.name+"-cpu-ns/B")
		}
		b.ReportMetric(float64(cli[p.name].Nanoseconds())/float64(bytes), p.name+"-curl-cpu-ns/B")
		b.Logf("%-9s MB/s per round: %s", p.name, rates(perRound, s))
	}
	for _, pair := range [][2]string{{"mailproxy", "stunnel"}, {"mailproxy", "direct"}, {"stunnel", "direct"}, {"mailproxy", "baseline"}} {
		if secs[pair[1]] == nil {
			continue
		}
		var r []float64
		for i := range secs[pair[0]] {
			r = append(r, secs[pair[0]][i]/secs[pair[1]][i])
		}
		b.ReportMetric(median(r), pair[0]+"/"+pair[1]+"-time")
		b.Logf("time %s/%s per round: median %.3f, range %.3f-%.3f", pair[0], pair[1], median(r), slices.Min(r), slices.Max(r))
	}
}

// bulkRound runs one curl with fetches URLs of the message over path p and
// returns the wall time, the CPU time the process in the middle used
// meanwhile and curl's own CPU time.
func bulkRound(b *testing.B, e *env, p benchPath, mailbox string, uid, size, fetches int) (time.Duration, time.Duration, time.Duration) {
	b.Helper()
	scheme := "imap"
	argv := []string{"-sS", "--max-time", "120", "--netrc-file", e.netrc["alice"],
		"-w", "%{size_download} %{num_connects}\\n"}
	if p.tls {
		scheme = "imaps"
		argv = append(argv, "--cacert", e.prov.caFile)
	}
	url := fmt.Sprintf("%s://127.0.0.1:%d/%s;UID=%d", scheme, p.port, mailbox, uid)
	for range fetches {
		argv = append(argv, "-o", "/dev/null", url)
	}
	logins := e.prov.dovecotLog.size()
	var before time.Duration
	if p.pid != 0 {
		before = cpuTime(b, p.pid)
	}
	cmd := exec.Command("curl", argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	out, err := cmd.Output()
	d := time.Since(t0)
	var midCPU time.Duration
	if p.pid != 0 {
		midCPU = cpuTime(b, p.pid) - before
	}
	if err != nil {
		b.Fatalf("curl over %s: %v\n%s", p.name, err, e.redact(stderr.String()))
	}
	// Every transfer got the whole message, and only the first one
	// connected.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != fetches {
		b.Fatalf("curl over %s reported %d transfers, want %d: %q", p.name, len(lines), fetches, out)
	}
	for j, l := range lines {
		f := strings.Fields(l)
		connects := 0
		if j == 0 {
			connects = 1
		}
		want := fmt.Sprintf("%d %d", size, connects)
		if len(f) != 2 || f[0]+" "+f[1] != want {
			b.Fatalf("curl over %s, transfer %d: size_download and num_connects %q, want %q", p.name, j+1, l, want)
		}
	}
	// Dovecot saw one login for the whole run.
	if n := countLogins(e, logins); n != 1 {
		b.Fatalf("curl over %s: Dovecot logged %d logins for one run of %d fetches, want 1", p.name, n, fetches)
	}
	u := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	curlCPU := time.Duration(u.Utime.Nano() + u.Stime.Nano())
	return d, midCPU, curlCPU
}

// countLogins counts alice's IMAP logins in Dovecot's log from off on.
func countLogins(e *env, off int64) int {
	// Dovecot may write the line a moment after the login's OK.
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := strings.Count(e.prov.dovecotLog.since(off), "imap-login: Info: Login: user=<"+alice.name+">")
		if n > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkLoginSelect measures, per path, the time from the TCP connect
// to the tagged OK of SELECT INBOX: the greeting, LOGIN, then SELECT, each
// waited for, as an app does them (for direct, the TLS handshake too). It
// does not depend on when mailproxy dials the provider (before the
// greeting or at LOGIN): it drives the protocol only. LOGOUT is not timed.
func BenchmarkLoginSelect(b *testing.B) {
	if suite == nil {
		b.Skip("no e2e environment")
	}
	e := suite
	paths := benchPaths(b, e)
	lat := map[string][]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range paths {
			p := paths[(i+k)%len(paths)]
			t0 := time.Now()
			c, err := dialBench(p.port, p.tls, e.prov.caFile)
			if err == nil {
				err = c.login(alice)
			}
			if err == nil {
				_, err = c.cmd("SELECT INBOX")
			}
			d := time.Since(t0)
			if err == nil {
				_, err = c.cmd("LOGOUT")
			}
			if c != nil {
				c.close()
			}
			if err != nil {
				b.Fatalf("over %s: %v", p.name, err)
			}
			lat[p.name] = append(lat[p.name], float64(d.Nanoseconds()))
		}
	}
	b.StopTimer()
	for _, p := range paths {
		l := lat[p.name]
		b.ReportMetric(median(l), p.name+"-ns/login")
		b.Logf("%-9s connect to SELECT OK: median %v, range %v-%v", p.name,
			time.Duration(median(l)).Round(time.Microsecond),
			time.Duration(slices.Min(l)).Round(time.Microsecond), time.Duration(slices.Max(l)).Round(time.Microsecond))
	}
}

// benchConn is a minimal IMAP client for the benchmarks: no transcript,
// errors instead of test failures, never a credential in an error.
type benchConn struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
}

// dialBench connects to 127.0.0.1:port (over TLS, verified with the
// suite's CA, if tlsOn) and reads the greeting.
func dialBench(port int, tlsOn bool, caFile string) (*benchConn, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := &net.Dialer{Timeout: 10 * time.Second}
	var conn net.Conn
	var err error
	if tlsOn {
		pem, rerr := os.ReadFile(caFile)
		if rerr != nil {
			return nil, rerr
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		conn, err = tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := &benchConn{conn: conn, r: bufio.NewReader(conn)}
	greeting, err := c.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(greeting, "* OK") {
		conn.Close()
		return nil, fmt.Errorf("greeting %q: %v", clip(greeting), err)
	}
	return c, nil
}

func (c *benchConn) close() { c.conn.Close() }

// cmd sends one command and reads up to its tagged status, which must be
// OK; it returns the status line. Literals in responses are skipped.
func (c *benchConn) cmd(command string) (string, error) {
	c.tag++
	tag := "b" + strconv.Itoa(c.tag)
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, command); err != nil {
		return "", err
	}
	return c.status(tag, strings.Fields(command)[0])
}

func (c *benchConn) status(tag, what string) (string, error) {
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		if strings.HasPrefix(line, tag+" ") {
			status := strings.TrimRight(strings.TrimPrefix(line, tag+" "), "\r\n")
			if !strings.HasPrefix(status, "OK") {
				return status, fmt.Errorf("%s: %q", what, clip(status))
			}
			return status, nil
		}
		if m := literalRE.FindStringSubmatch(strings.TrimRight(line, "\r\n")); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			if _, err := c.r.Discard(int(n)); err != nil {
				return "", fmt.Errorf("%s: %w", what, err)
			}
		}
	}
}

// login logs in with LOGIN; an error never shows the command.
func (c *benchConn) login(u user) error {
	_, err := c.cmd("LOGIN " + quote(u.name) + " " + quote(u.pass))
	return err
}

// appendLiteral appends raw to mailbox and returns the tagged status.
func (c *benchConn) appendLiteral(mailbox string, raw []byte) (string, error) {
	c.tag++
	tag := "b" + strconv.Itoa(c.tag)
	if _, err := fmt.Fprintf(c.conn, "%s APPEND %s {%d}\r\n", tag, quote(mailbox), len(raw)); err != nil {
		return "", err
	}
	if cont, err := c.r.ReadString('\n'); err != nil || !strings.HasPrefix(cont, "+") {
		return "", fmt.Errorf("APPEND: want a continuation, got %q (%v)", clip(cont), err)
	}
	if _, err := c.conn.Write(append(raw, "\r\n"...)); err != nil {
		return "", err
	}
	return c.status(tag, "APPEND")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// rates formats per-round throughputs in MB/s with their median and range.
func rates(bytes float64, secs []float64) string {
	var r []float64
	for _, s := range secs {
		r = append(r, bytes/1e6/s)
	}
	return fmt.Sprintf("median %.0f, range %.0f-%.0f", median(r), slices.Min(r), slices.Max(r))
}
