package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/tlsconf"
)

func TestSecretNeverPrints(t *testing.T) {
	const pw = "hunter2-secret"
	c := Credentials{Username: "alice", Password: NewSecret(pw)}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "creds", c, "pw", c.Password)
	j, _ := json.Marshal(c)
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q %x", c, c, c, c.Password, c.Password, c.Password),
		logBuf.String(), string(j), fmt.Errorf("login failed: %v", c).Error(),
	} {
		if strings.Contains(s, pw) || strings.Contains(s, fmt.Sprintf("%x", pw)) {
			t.Errorf("secret printed: %s", s)
		}
	}
	if c.Password.Reveal() != pw {
		t.Error("Reveal does not return the secret")
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// tlsPair returns a TCP pair whose second half is wrapped in TLS on both
// sides (the provider's side of a relay).
func tlsPair(t *testing.T) (client *tls.Conn, server *tls.Conn) {
	t.Helper()
	ca, _ := certs.NewCA("relay test")
	cert, _ := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	a, b := tcpPair(t)
	client = tls.Client(a, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	server = tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return client, server
}

func testSession(idle time.Duration) *Session {
	return &Session{Settings: &Settings{Limits: Limits{IdleTimeout: idle}}}
}

// relayFixture: app <-> [appSide | Relay | upSide(TLS)] <-> provider.
type relayFixture struct {
	app      net.Conn
	provider *tls.Conn
	done     chan error
}

func startRelay(t *testing.T, idle time.Duration, appPending, upPending string) *relayFixture {
	app, appSide := tcpPair(t)
	upSide, provider := tlsPair(t)
	f := &relayFixture{app: app, provider: provider, done: make(chan error, 1)}
	go func() {
		f.done <- testSession(idle).Relay(appSide, []byte(appPending), upSide, []byte(upPending), nil)
	}()
	return f
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func TestRelayDeliversPendingFirstAndBothWays(t *testing.T) {
	f := startRelay(t, time.Minute, "a2 SELECT INBOX\r\n", "* 3 EXISTS\r\n")
	if got := readN(t, f.provider, 17); got != "a2 SELECT INBOX\r\n" {
		t.Errorf("provider got %q first", got)
	}
	if got := readN(t, f.app, 12); got != "* 3 EXISTS\r\n" {
		t.Errorf("app got %q first", got)
	}
	// A large transfer each way, byte-exact.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	go f.provider.Write(big)
	if got := readN(t, f.app, len(big)); got != string(big) {
		t.Error("provider-to-app transfer corrupted")
	}
	go f.app.Write(big)
	if got := readN(t, f.provider, len(big)); got != string(big) {
		t.Error("app-to-provider transfer corrupted")
	}
	// The app half-closes after its last command; the provider still
	// answers, then closes: both directions end cleanly.
	f.app.Write([]byte("z LOGOUT\r\n"))
	f.app.(*net.TCPConn).CloseWrite()
	if got := readN(t, f.provider, 10); got != "z LOGOUT\r\n" {
		t.Errorf("provider got %q", got)
	}
	f.provider.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := f.provider.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("provider did not see the half-close: %d, %v", n, err)
	}
	f.provider.Write([]byte("* BYE\r\nz OK\r\n"))
	f.provider.Close()
	if got := readN(t, f.app, 13); got != "* BYE\r\nz OK\r\n" {
		t.Errorf("app got %q after its half-close", got)
	}
	select {
	case err := <-f.done:
		if err != nil {
			t.Errorf("relay: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
	}
}

// TestRelayBatchesNeverHoldATail: in a transfer the relay lets the kernel
// gather records (SO_RCVLOWAT on Linux) or waits for them; whatever is
// less than a batch at the end of a response — mid-record too — must still
// reach the app at once, and after the transfer a one-line response must
// not wait for a batch that never comes (the idle limit here is a minute).
func TestRelayBatchesNeverHoldATail(t *testing.T) {
	f := startRelay(t, time.Minute, "", "")
	quick := func(n int) string {
		t.Helper()
		f.app.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, n)
		if _, err := io.ReadFull(f.app, b); err != nil {
			t.Fatalf("the app waited for %d bytes: %v", n, err)
		}
		return string(b)
	}
	for _, size := range []int{1<<20 + 777, 200 << 10, 70 << 10, 3000} {
		body := bytes.Repeat([]byte("x"), size)
		go f.provider.Write(body)
		if got := quick(size); got != string(body) {
			t.Fatalf("%d-byte response corrupted", size)
		}
		for i := 0; i < 3; i++ {
			f.provider.Write([]byte("* OK still here\r\n"))
			if got := quick(17); got != "* OK still here\r\n" {
				t.Fatalf("after %d bytes the app got %q", size, got)
			}
		}
	}
}

func TestRelayIdleLimit(t *testing.T) {
	f := startRelay(t, time.Second, "", "")
	// Traffic in one direction keeps the session alive for both.
	for i := 0; i < 4; i++ {
		time.Sleep(250 * time.Millisecond)
		f.provider.Write([]byte("* OK still here\r\n"))
		readN(t, f.app, 17)
	}
	select {
	case err := <-f.done:
		t.Fatalf("relay ended while the provider was talking: %v", err)
	default:
	}
	select {
	case err := <-f.done:
		if !errors.Is(err, ErrIdle) {
			t.Errorf("relay ended with %v, want ErrIdle", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle relay did not end")
	}
}

func TestRelayProviderGoneEndsApp(t *testing.T) {
	f := startRelay(t, time.Minute, "", "")
	f.provider.Write([]byte("* 1 FETCH (BODY[] {100}\r\npartial"))
	f.provider.NetConn().Close() // no close_notify: the provider vanished
	readN(t, f.app, 32)
	f.app.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := f.app.Read(make([]byte, 1)); err == nil {
		t.Error("the app did not see the connection end")
	}
	f.app.Close()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
	}
}

// panicFront panics in Serve; refuse records refusals.
type panicFront struct{ refused atomic.Int32 }

func (f *panicFront) Serve(ctx context.Context, s *Session) error { panic("boom") }
func (f *panicFront) Refuse(w io.Writer, r policy.Reason, text string) {
	f.refused.Add(1)
	fmt.Fprintf(w, "NO %s\r\n", text)
}

func TestPanicEndsOnlyThatSession(t *testing.T) {
	audit := &testkit.Audit{}
	front := &panicFront{}
	l := NewListener(front, policy.NewAudit(audit, 0), &tlsconf.Dialer{}, &Settings{
		Listen: ListenSpec{Proto: policy.IMAP, Address: "127.0.0.1:0", MaxSessions: 10, Access: policy.Access{Loopback: true}},
	})
	if err := l.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	go l.Serve(context.Background())
	defer l.Shutdown(context.Background())
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c) // the session ends; the listener goes on
		c.Close()
	}
	audit.WaitFor(t, "session.end", 2)
	if got := strings.Count(audit.String(), `"error":"internal error (please report): boom"`); got != 2 {
		t.Errorf("want two session.end events naming the panic:\n%s", audit.String())
	}
}

// TestShutdownWaitsThenCuts: Shutdown lets a running session finish until
// its deadline, then closes it.
func TestShutdownWaitsThenCuts(t *testing.T) {
	started := make(chan struct{})
	front := frontFunc(func(ctx context.Context, s *Session) error {
		close(started)
		_, err := s.Client.Read(make([]byte, 1)) // blocks until cut
		return err
	})
	l := NewListener(front, policy.Discard(), &tlsconf.Dialer{}, &Settings{
		Listen: ListenSpec{Proto: policy.IMAP, Address: "127.0.0.1:0", MaxSessions: 10, Access: policy.Access{Loopback: true}},
	})
	if err := l.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	go l.Serve(context.Background())
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = l.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) < 250*time.Millisecond {
		t.Errorf("Shutdown returned %v after %v", err, time.Since(t0))
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

type frontFunc func(ctx context.Context, s *Session) error

func (f frontFunc) Serve(ctx context.Context, s *Session) error { return f(ctx, s) }
func (frontFunc) Refuse(io.Writer, policy.Reason, string)       {}

// panicWriter is an app-to-provider filter that panics at the first
// byte, as a bug in the ID filter would.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("filter boom") }

// TestRelayPanicEndsOnlyThatSession: a panic in the relay's own goroutine
// (app to provider, where the IMAP front's ID filter runs) ends that
// session with session.panic, not the process.
func TestRelayPanicEndsOnlyThatSession(t *testing.T) {
	audit := &testkit.Audit{}
	front := frontFunc(func(ctx context.Context, s *Session) error {
		up, provider := net.Pipe()
		defer provider.Close()
		go io.Copy(io.Discard, provider)
		return s.Relay(s.Client, nil, up, nil, func(io.Writer) io.Writer { return panicWriter{} })
	})
	l := NewListener(front, policy.NewAudit(audit, 0), &tlsconf.Dialer{}, &Settings{
		Listen: ListenSpec{Proto: policy.IMAP, Address: "127.0.0.1:0", MaxSessions: 10, Access: policy.Access{Loopback: true}},
	})
	if err := l.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	go l.Serve(context.Background())
	defer l.Shutdown(context.Background())
	for range 2 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("a ID NIL\r\n"))
		io.ReadAll(c) // the session ends; the listener goes on
		c.Close()
	}
	audit.WaitFor(t, "session.end", 2)
	if got := strings.Count(audit.String(), `"error":"internal error (please report): filter boom"`); got != 2 {
		t.Errorf("want two session.end events naming the panic:\n%s", audit.String())
	}
	if p := audit.Find(t, "session.panic"); len(p) != 2 || !strings.Contains(p[0]["stack"].(string), "proxyCopy") {
		t.Errorf("session.panic events: %v", p)
	}
}

// TestProviderBudget: lines from the provider before the relay, each well
// under MaxProviderLine, are refused once their sum passes MaxBeforeRelay.
func TestProviderBudget(t *testing.T) {
	line := strings.Repeat("x", 1000) + "\r\n"
	br := bufio.NewReader(strings.NewReader(strings.Repeat(line, MaxBeforeRelay/len(line)+2)))
	var b ProviderBudget
	n := 0
	for {
		_, err := b.Line(br)
		if err != nil {
			if err != ErrBeforeRelayTooLong || n != MaxBeforeRelay/len(line) {
				t.Fatalf("after %d lines: %v", n, err)
			}
			return
		}
		n++
	}
}
