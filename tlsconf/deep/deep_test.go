package deep

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/tlsconf"
	"mailproxy/tlsconf/hello"
)

// fakeServer answers a ClientHello with a bare ServerHello (or an alert),
// as a server of the kind OpenSSL 3 can no longer play would: SSLv3, 3DES,
// RC4, EXPORT, or one that ignores TLS_FALLBACK_SCSV. It never goes past
// the ServerHello, and neither does a probe.
type fakeServer struct {
	versions []uint16 // accepted, any order
	suites   []uint16 // accepted, the server's preference first
	noSCSV   bool     // ignore TLS_FALLBACK_SCSV
	imap     bool     // a plaintext IMAP STARTTLS exchange first

	running    sync.WaitGroup
	mu         sync.Mutex
	preTLS     []string // lines the client sent before the hello
	afterHello int      // bytes the client sent after its hello
}

// sentAfterHello waits for every connection's handler (each probe has
// closed its connection when Run returns) and returns what the clients
// sent after their hellos.
func (f *fakeServer) sentAfterHello() int {
	f.running.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.afterHello
}

func (f *fakeServer) serve(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		f.handle(c)
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func (f *fakeServer) handle(c net.Conn) {
	// Added before the server answers, so before the probe can return.
	f.running.Add(1)
	defer f.running.Done()
	br := bufio.NewReader(c)
	if f.imap {
		fmt.Fprintf(c, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n")
		l, err := br.ReadString('\n')
		if err != nil {
			return
		}
		f.mu.Lock()
		f.preTLS = append(f.preTLS, strings.TrimSpace(l))
		f.mu.Unlock()
		tag, cmd, _ := strings.Cut(strings.TrimSpace(l), " ")
		if !strings.EqualFold(cmd, "STARTTLS") {
			fmt.Fprintf(c, "%s BAD only STARTTLS here\r\n", tag)
			return
		}
		fmt.Fprintf(c, "%s OK begin TLS\r\n", tag)
	}
	// Like the old servers it plays, it knows nothing of TLS 1.3 and
	// ignores supported_versions.
	_, cv, offered, _, err := readClientHello(br)
	if err != nil {
		return
	}
	alert := func(desc byte) { c.Write([]byte{0x15, 0x03, 0x01, 0, 2, 2, desc}) }
	// The version: the highest both sides have, within what was offered.
	var v uint16
	for _, x := range f.versions {
		if x <= cv && x > v {
			v = x
		}
	}
	switch {
	case v == 0:
		alert(70)
		return
	case !f.noSCSV && slices.Contains(offered, hello.FallbackSCSV) && v < slices.Max(f.versions):
		alert(86)
		return
	}
	var s uint16
	for _, x := range f.suites {
		if slices.Contains(offered, x) {
			s = x
			break
		}
	}
	if s == 0 {
		alert(40)
		return
	}
	body := binary.BigEndian.AppendUint16(nil, v)
	body = append(body, bytes.Repeat([]byte{7}, 32)...)
	body = append(body, 0)
	body = binary.BigEndian.AppendUint16(body, s)
	body = append(body, 0)
	hs := append([]byte{2, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	rec := append([]byte{0x16, byte(v >> 8), byte(v), byte(len(hs) >> 8), byte(len(hs))}, hs...)
	c.Write(rec)
	// Anything the client sends after its hello is counted: a probe must
	// send nothing.
	n, _ := io.Copy(io.Discard, br)
	f.mu.Lock()
	f.afterHello += int(n)
	f.mu.Unlock()
}

// readClientHello reads one ClientHello record: the record's version, the
// legacy client_version, the suites, and the supported_versions list.
func readClientHello(r io.Reader) (rec, cv uint16, suites, sv []uint16, err error) {
	hdr := make([]byte, 5)
	if _, err = io.ReadFull(r, hdr); err != nil {
		return
	}
	b := make([]byte, binary.BigEndian.Uint16(hdr[3:5]))
	if _, err = io.ReadFull(r, b); err != nil {
		return
	}
	bad := fmt.Errorf("bad ClientHello")
	if hdr[0] != 0x16 || len(b) < 4+2+32+1 || b[0] != 1 {
		return 0, 0, nil, nil, bad
	}
	rec = binary.BigEndian.Uint16(hdr[1:3])
	b = b[4:]
	cv = binary.BigEndian.Uint16(b[0:2])
	b = b[34:]
	b = b[1+int(b[0]):]
	n := int(binary.BigEndian.Uint16(b[0:2]))
	for i := 0; i < n; i += 2 {
		suites = append(suites, binary.BigEndian.Uint16(b[2+i:]))
	}
	b = b[2+n:]
	b = b[1+int(b[0]):] // compression
	if len(b) < 2 {
		return
	}
	ext := b[2:]
	for len(ext) >= 4 {
		typ, l := binary.BigEndian.Uint16(ext[0:2]), int(binary.BigEndian.Uint16(ext[2:4]))
		if typ == 0x002b {
			for i := 1; i+1 < 1+int(ext[4]); i += 2 {
				sv = append(sv, binary.BigEndian.Uint16(ext[4+i:]))
			}
		}
		ext = ext[4+l:]
	}
	return
}

func provider() *policy.Provider {
	return &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, AllowPrivateAddresses: true}
}

func probe(t *testing.T, port int, sec policy.Security) (*Report, *testkit.Audit) {
	t.Helper()
	ab := &testkit.Audit{}
	d := &tlsconf.Dialer{Timeout: 10 * time.Second}
	ep := policy.Endpoint{Proto: policy.IMAP, Security: sec, Host: "127.0.0.1", Port: uint16(port)}
	rep, err := Run(context.Background(), d, provider(), ep, policy.NewAudit(ab, 0).Session("deep", policy.IMAP))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, r := range rep.Results {
		if r.Err != nil {
			t.Fatalf("probe %s learned nothing: %v", r.Name, r.Err)
		}
	}
	return rep, ab
}

// want checks the named probes' verdicts (true = accepted / honoured).
func want(t *testing.T, rep *Report, verdicts map[string]bool) {
	t.Helper()
	for name, w := range verdicts {
		r, ok := rep.Result(name)
		if !ok {
			t.Errorf("no %s probe", name)
			continue
		}
		if r.Accepted != w {
			t.Errorf("%s: accepted=%v (%s %s, %s), want %v", name, r.Accepted, policy.TLSVersionName(r.Version), SuiteName(r.Suite), r.Note, w)
		}
	}
}

// Every probe against scripted servers that accept exactly one weakness:
// the weaknesses OpenSSL 3 cannot serve (SSLv3, 3DES, RC4, EXPORT, an
// ignored SCSV), and the server that accepts none.
func TestProbesScripted(t *testing.T) {
	t12 := []uint16{hello.TLS12}
	strong := []uint16{0xc02f}
	cases := []struct {
		name   string
		srv    *fakeServer
		accept []string // the probes accepted, besides fallback_scsv (honoured)
	}{
		// An SSLv3 server answers any hello with SSLv3, so the suite
		// probes find its RSA, CBC and 3DES suites too.
		{"SSLv3 only", &fakeServer{versions: []uint16{hello.SSLv3}, suites: []uint16{0x002f, 0x000a}}, []string{SSLv3, RSAKeyExchange, CBC, TripleDES}},
		{"3DES only", &fakeServer{versions: t12, suites: []uint16{0x000a}}, []string{TripleDES, CBC, RSAKeyExchange}},
		{"RC4 only", &fakeServer{versions: t12, suites: []uint16{0x0005}}, []string{RC4, RSAKeyExchange}},
		{"EXPORT only", &fakeServer{versions: t12, suites: []uint16{0x0003}}, []string{Export}},
		{"NULL only", &fakeServer{versions: t12, suites: []uint16{0x0002}}, []string{NULL}},
		{"strict", &fakeServer{versions: []uint16{hello.TLS12}, suites: strong}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, _ := probe(t, c.srv.serve(t), policy.ImplicitTLS)
			verdicts := map[string]bool{FallbackSCSV: true}
			for _, n := range []string{SSLv3, TLS10, TLS11, RSAKeyExchange, DHE, TripleDES, RC4, CBC, NULL, Export} {
				verdicts[n] = slices.Contains(c.accept, n)
			}
			want(t, rep, verdicts)
			if n := c.srv.sentAfterHello(); n != 0 {
				t.Errorf("a probe sent %d bytes after its hello", n)
			}
		})
	}
	t.Run("SCSV ignored", func(t *testing.T) {
		srv := &fakeServer{versions: []uint16{hello.TLS11, hello.TLS12}, suites: []uint16{0xc02f, 0xc013}, noSCSV: true}
		rep, _ := probe(t, srv.serve(t), policy.ImplicitTLS)
		want(t, rep, map[string]bool{FallbackSCSV: false, TLS11: true})
		if !slices.Contains(rep.Weak(), "no fallback SCSV") || !strings.HasPrefix(rep.Verdict(), "WEAK") {
			t.Errorf("verdict %q", rep.Verdict())
		}
	})
	t.Run("SCSV honoured", func(t *testing.T) {
		srv := &fakeServer{versions: []uint16{hello.TLS11, hello.TLS12}, suites: []uint16{0xc02f, 0xc013}}
		rep, _ := probe(t, srv.serve(t), policy.ImplicitTLS)
		want(t, rep, map[string]bool{FallbackSCSV: true, TLS11: true, CBC: true})
		if r, _ := rep.Result(FallbackSCSV); !strings.Contains(r.Note, "inappropriate_fallback") {
			t.Errorf("fallback note %q", r.Note)
		}
	})
}

// A STARTTLS endpoint: the probes do the protocol's STARTTLS exchange
// first (and nothing else: no login), each probe is an audited
// upstream.connect, and nothing follows a hello.
func TestProbesSTARTTLS(t *testing.T) {
	srv := &fakeServer{versions: []uint16{hello.TLS10, hello.TLS12}, suites: []uint16{0xc02f, 0x0033}, imap: true}
	rep, ab := probe(t, srv.serve(t), policy.STARTTLS)
	want(t, rep, map[string]bool{TLS10: true, DHE: true, RSAKeyExchange: false, SSLv3: false, FallbackSCSV: true})
	if r, _ := rep.Result(Preferred); r.Suite != 0xc02f {
		t.Errorf("preferred suite %s", SuiteName(r.Suite))
	}
	if n := srv.sentAfterHello(); n != 0 {
		t.Errorf("a probe sent %d bytes after its hello", n)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, l := range srv.preTLS {
		if !strings.HasSuffix(strings.ToUpper(l), " STARTTLS") {
			t.Errorf("a probe sent %q before TLS", l)
		}
	}
	if got := len(ab.Find(t, policy.EventUpstreamConnect)); got != len(srv.preTLS) || got < 12 {
		t.Errorf("%d upstream.connect events for %d connections", got, len(srv.preTLS))
	}
}

// The probes go through the policed dialer: a host outside the allowlist,
// or a private address for a provider that does not allow them, is
// refused and audited before anything is sent.
func TestProbesPoliced(t *testing.T) {
	srv := &fakeServer{versions: []uint16{hello.TLS12}, suites: []uint16{0xc02f}}
	port := srv.serve(t)
	for _, c := range []struct {
		p      *policy.Provider
		reason policy.Reason
	}{
		{&policy.Provider{Name: "x", Hosts: []string{"mail.example.com"}, AllowPrivateAddresses: true}, policy.ReasonNonProviderHost},
		{&policy.Provider{Name: "x", Hosts: []string{"127.0.0.1"}}, policy.ReasonPrivateAddress},
	} {
		ab := &testkit.Audit{}
		ep := policy.Endpoint{Proto: policy.IMAP, Host: "127.0.0.1", Port: uint16(port)}
		_, err := Run(context.Background(), &tlsconf.Dialer{Timeout: 5 * time.Second}, c.p, ep, policy.NewAudit(ab, 0).Session("deep", policy.IMAP))
		if err == nil || !strings.Contains(err.Error(), string(c.reason)) {
			t.Errorf("Run = %v, want %s", err, c.reason)
		}
		if d := ab.Find(t, policy.EventDenied); len(d) != 1 || d[0]["reason"] != string(c.reason) {
			t.Errorf("policy.denied events %v", d)
		}
	}
}

// opensslServer runs `openssl s_server` on a free port of 127.0.0.1 with
// an RSA certificate, serving connection after connection.
func opensslServer(t *testing.T, args ...string) int {
	t.Helper()
	bin := testkit.NeedTool(t, "openssl")
	ca, err := certs.NewCA("deep test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1"}, RSA: true})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := certs.WritePair(t.TempDir(), "server", cert)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		all := append([]string{"s_server", "-accept", "127.0.0.1:" + strconv.Itoa(port), "-cert", certFile, "-key", keyFile, "-quiet"}, args...)
		cmd := exec.Command(bin, all...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			select {
			case <-done:
				deadline = time.Time{}
				continue
			default:
			}
			if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				c.Close()
				return port
			}
		}
		t.Logf("openssl s_server %v: %s", args, stderr.String())
	}
	t.Fatal("openssl s_server did not start")
	return 0
}

// OpenSSLCases are the servers `openssl s_server` can play, with the
// verdict every probe must reach. The e2e suite runs testssl.sh against
// the same servers.
var OpenSSLCases = []struct {
	Name string
	Args []string
	Want map[string]bool
	// Preferred is the suite a client offering everything gets (0: any).
	Preferred uint16
}{
	{"TLS 1.0 only", []string{"-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"},
		map[string]bool{SSLv3: false, TLS10: true, TLS11: false, RSAKeyExchange: false, DHE: false, CBC: true, NULL: false, FallbackSCSV: true}, 0xc013},
	{"TLS 1.1 only", []string{"-tls1_1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"},
		map[string]bool{SSLv3: false, TLS10: false, TLS11: true, RSAKeyExchange: false, CBC: true, FallbackSCSV: true}, 0xc013},
	{"RSA key exchange only", []string{"-tls1_2", "-cipher", "AES128-GCM-SHA256"},
		map[string]bool{TLS10: false, TLS11: false, RSAKeyExchange: true, DHE: false, CBC: false, NULL: false}, 0x009c},
	{"DHE only", []string{"-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"},
		map[string]bool{RSAKeyExchange: false, DHE: true, CBC: false}, 0x009e},
	{"CBC only", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA"},
		map[string]bool{RSAKeyExchange: false, DHE: false, CBC: true, TLS10: false}, 0},
	{"NULL only", []string{"-tls1_2", "-cipher", "NULL-SHA256:NULL-SHA:@SECLEVEL=0"},
		map[string]bool{NULL: true, RSAKeyExchange: false, CBC: false, Export: false}, 0},
	{"modern, TLS 1.2 and 1.3, server order", []string{"-cipher", "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256", "-serverpref"},
		map[string]bool{SSLv3: false, TLS10: false, TLS11: false, RSAKeyExchange: false, DHE: false, TripleDES: false, RC4: false, CBC: false, NULL: false, Export: false, FallbackSCSV: true}, 0xc030},
}

func TestProbesOpenSSL(t *testing.T) {
	for _, c := range OpenSSLCases {
		t.Run(c.Name, func(t *testing.T) {
			rep, _ := probe(t, opensslServer(t, c.Args...), policy.ImplicitTLS)
			want(t, rep, c.Want)
			if r, _ := rep.Result(Preferred); c.Preferred != 0 && r.Suite != c.Preferred {
				t.Errorf("preferred suite %s, want %s", SuiteName(r.Suite), SuiteName(c.Preferred))
			}
		})
	}
}
