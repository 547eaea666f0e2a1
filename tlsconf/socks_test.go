package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
)

// noDNS is a resolver that fails the test when anything asks it.
func noDNS(t *testing.T) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		t.Errorf("a DNS lookup was made (to %s) where the proxy resolves names", address)
		return nil, errors.New("no DNS in this test")
	}}
}

// socksDial dials ep of p with d, and returns the result and its audit.
func socksDial(t *testing.T, ctx context.Context, d *Dialer, p *policy.Provider, ep policy.Endpoint) dialResult {
	t.Helper()
	ab := &testkit.Audit{}
	up, err := d.Dial(ctx, p, ep, policy.NewAudit(ab, 0).Session("t1", ep.Proto))
	r := dialResult{up: up, err: err, audit: ab}
	if up != nil {
		t.Cleanup(func() { up.Close() })
	}
	for _, e := range ab.Events(t) {
		switch e["msg"] {
		case policy.EventDenied:
			r.denied = e
		case policy.EventUpstreamTLS:
			r.tls = e
		}
	}
	return r
}

// namedServer is a TLS server for name on 127.0.0.1, trusted by the
// returned provider, which reaches it through via.
func namedServer(t *testing.T, name string, via *policy.Via) (*policy.Provider, int) {
	p := newPKI(t)
	cert := p.issue(t, certs.Leaf{Names: []string{name}})
	port := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	return &policy.Provider{Name: "onion-test", Hosts: []string{name}, TLS: policy.TLSPolicy{Roots: p.ca.Pool()}, Via: via}, port
}

func viaOf(s *testkit.SOCKS5, remoteDNS bool) *policy.Via {
	return &policy.Via{Addr: s.Addr, RemoteDNS: remoteDNS}
}

func readHello(t *testing.T, up *Upstream) {
	t.Helper()
	b := make([]byte, 5)
	if _, err := io.ReadFull(up, b); err != nil || string(b) != "hello" {
		t.Fatalf("through the tunnel: %q, %v", b, err)
	}
}

func TestSOCKS5hRemoteDNS(t *testing.T) {
	for _, name := range []string{"mail.example.test", "5gdvpfoh6kb2iqbizb37lzk2ddzrwa47m6rpdueg2m656fovmbhoptqd.onion"} {
		t.Run(name, func(t *testing.T) {
			s := testkit.NewSOCKS5(t, map[string]string{name: "127.0.0.1"})
			p, port := namedServer(t, name, nil)
			p.Via = viaOf(s, true)
			d := &Dialer{Resolver: noDNS(t), Timeout: 10 * time.Second}
			r := socksDial(t, context.Background(), d, p, policy.Endpoint{Proto: policy.IMAP, Host: name, Port: uint16(port)})
			r.wantOK(t)
			readHello(t, r.up)
			reqs := s.Requests()
			if len(reqs) != 1 || reqs[0].ATYP != 3 || reqs[0].Host != name || reqs[0].Port != port {
				t.Fatalf("the proxy was asked %+v, want the name %s:%d", reqs, name, port)
			}
			if reqs[0].AuthMethod != 0 {
				t.Errorf("credentials sent without any configured: %+v", reqs[0])
			}
			ev := r.audit.Find(t, policy.EventUpstreamConnect)
			want := net.JoinHostPort(name, strconv.Itoa(port))
			if len(ev) != 1 || ev[0]["addr"] != want || ev[0]["via"] != s.Addr.String() || ev[0]["host"] != name {
				t.Errorf("upstream.connect = %v, want addr %s via %s", ev, want, s.Addr)
			}
			if r.tls["verified"] != true || r.up.Addr != want {
				t.Errorf("upstream.tls %v, Addr %q", r.tls, r.up.Addr)
			}
		})
	}
}

// Plain socks5: mailproxy resolves, checks the addresses like on a direct
// connection, and asks the proxy for an address, never a name.
func TestSOCKS5LocalResolution(t *testing.T) {
	s := testkit.NewSOCKS5(t, nil)
	p, port := namedServer(t, "localhost", viaOf(s, false))
	ep := policy.Endpoint{Proto: policy.IMAP, Host: "localhost", Port: uint16(port)}
	r := socksDial(t, context.Background(), &Dialer{Timeout: 10 * time.Second}, p, ep)
	r.wantDenied(t, policy.ReasonPrivateAddress)
	if n := len(s.Requests()); n != 0 {
		t.Fatalf("the proxy got %d requests for a refused address", n)
	}

	p.AllowPrivateAddresses = true
	r = socksDial(t, context.Background(), &Dialer{Timeout: 10 * time.Second}, p, ep)
	r.wantOK(t)
	readHello(t, r.up)
	reqs := s.Requests()
	if len(reqs) == 0 {
		t.Fatal("the proxy got no request")
	}
	for _, q := range reqs {
		if q.ATYP == 3 {
			t.Errorf("the proxy was asked for a name with socks5://: %+v", q)
		}
	}
	if last := reqs[len(reqs)-1]; last.Host != "127.0.0.1" || r.up.Addr != net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) {
		t.Errorf("last request %+v, Addr %s", last, r.up.Addr)
	}
}

// Everything after the raw connection is unchanged: STARTTLS, and the
// certificate and pins are checked end to end through the tunnel.
func TestSOCKSKeepsTLSChecks(t *testing.T) {
	p := newPKI(t)
	s := testkit.NewSOCKS5(t, map[string]string{"mail.example.test": "127.0.0.1"})
	cert := p.issue(t, certs.Leaf{Names: []string{"mail.example.test"}})
	srv := &starttlsServer{greeting: "220 mail.test ESMTP\r\n",
		replies:  map[string]string{"EHLO": "250-mail.test\r\n250 STARTTLS\r\n", "STARTTLS": "220 2.0.0 go ahead\r\n"},
		tlsAfter: "STARTTLS"}
	port := srv.serve(t, cert)
	prov := &policy.Provider{Name: "t", Hosts: []string{"mail.example.test"}, TLS: policy.TLSPolicy{Roots: p.ca.Pool()}, Via: viaOf(s, true)}
	ep := policy.Endpoint{Proto: policy.SMTP, Security: policy.STARTTLS, Host: "mail.example.test", Port: uint16(port)}
	d := &Dialer{Resolver: noDNS(t), Timeout: 10 * time.Second}
	r := socksDial(t, context.Background(), d, prov, ep)
	r.wantOK(t)
	if !r.up.AfterSTARTTLS {
		t.Error("AfterSTARTTLS not set")
	}

	// An untrusted certificate through the tunnel.
	other, _ := certs.NewCA("other")
	prov.TLS.Roots = other.Pool()
	tport := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	ep = policy.Endpoint{Proto: policy.IMAP, Host: "mail.example.test", Port: uint16(tport)}
	socksDial(t, context.Background(), d, prov, ep).wantDenied(t, policy.ReasonCertificate)

	// A pin that does not match.
	prov.TLS.Roots = p.ca.Pool()
	prov.TLS.Pins = [][32]byte{{1, 2, 3}}
	socksDial(t, context.Background(), d, prov, ep).wantDenied(t, policy.ReasonPin)
}

// The allowlist applies to the name asked for, and onion names need a
// proxy that resolves names.
func TestSOCKSAllowlistAndOnion(t *testing.T) {
	s := testkit.NewSOCKS5(t, map[string]string{"evil.example.test": "127.0.0.1"})
	p, port := namedServer(t, "mail.example.test", viaOf(s, true))
	d := &Dialer{Resolver: noDNS(t), Timeout: 10 * time.Second}
	socksDial(t, context.Background(), d, p, policy.Endpoint{Proto: policy.IMAP, Host: "evil.example.test", Port: uint16(port)}).
		wantDenied(t, policy.ReasonNonProviderHost)

	onion := "5gdvpfoh6kb2iqbizb37lzk2ddzrwa47m6rpdueg2m656fovmbhoptqd.onion"
	p.Hosts = []string{onion}
	ep := policy.Endpoint{Proto: policy.IMAP, Host: onion, Port: uint16(port)}
	for _, via := range []*policy.Via{nil, viaOf(s, false)} {
		p.Via = via
		socksDial(t, context.Background(), d, p, ep).wantDenied(t, policy.ReasonNonProviderHost)
	}
	if n := len(s.Requests()); n != 0 {
		t.Fatalf("the proxy got %d requests for refused hosts", n)
	}

	// A proxy off this machine is refused before any connection (0.0.0.0
	// is not loopback, and would reach nothing beyond this machine).
	p.Hosts = []string{"mail.example.test"}
	p.Via = &policy.Via{Addr: netip.MustParseAddrPort("0.0.0.0:9"), RemoteDNS: true}
	socksDial(t, context.Background(), d, p, policy.Endpoint{Proto: policy.IMAP, Host: "mail.example.test", Port: uint16(port)}).
		wantDenied(t, policy.ReasonNonProviderHost)
}

func TestSOCKSCredentials(t *testing.T) {
	s := testkit.NewSOCKS5(t, map[string]string{"mail.example.test": "127.0.0.1"})
	s.RequireAuth("alice", "s3cret-socks")
	p, port := namedServer(t, "mail.example.test", viaOf(s, true))
	ep := policy.Endpoint{Proto: policy.IMAP, Host: "mail.example.test", Port: uint16(port)}
	d := &Dialer{Resolver: noDNS(t), Timeout: 10 * time.Second}

	// None configured: the proxy wants some.
	r := socksDial(t, context.Background(), d, p, ep)
	var se *SOCKSError
	if !errors.As(r.err, &se) || !strings.Contains(se.Error(), "via_user") {
		t.Fatalf("without credentials: %v", r.err)
	}
	p.Via.User, p.Via.Password = "alice", "wrong"
	r = socksDial(t, context.Background(), d, p, ep)
	if !errors.As(r.err, &se) || !strings.Contains(se.Error(), "refused the SOCKS username and password") {
		t.Fatalf("wrong password: %v", r.err)
	}
	p.Via.Password = "s3cret-socks"
	socksDial(t, context.Background(), d, p, ep).wantOK(t)
	reqs := s.Requests()
	if last := reqs[len(reqs)-1]; last.User != "alice" || last.Pass != "s3cret-socks" {
		t.Errorf("the proxy got %q/%q", last.User, last.Pass)
	}
	if strings.Contains(r.err.Error(), "wrong") || strings.Contains(r.audit.String(), "s3cret") {
		t.Error("a SOCKS password reached an error or the audit")
	}
}

// With isolate, each account has credentials of its own, the same for each
// of its connections, and derived from nothing secret.
func TestSOCKSIsolation(t *testing.T) {
	s := testkit.NewSOCKS5(t, map[string]string{"mail.example.test": "127.0.0.1"})
	p, port := namedServer(t, "mail.example.test", viaOf(s, true))
	p.Via.Isolate = true
	ep := policy.Endpoint{Proto: policy.IMAP, Host: "mail.example.test", Port: uint16(port)}
	d := &Dialer{Resolver: noDNS(t), Timeout: 10 * time.Second}
	for _, acct := range []string{"alice@example.test", "bob@example.test", "alice@example.test"} {
		socksDial(t, WithAccount(context.Background(), acct), d, p, ep).wantOK(t)
	}
	socksDial(t, context.Background(), d, p, ep).wantOK(t) // no account: `check`
	socksDial(t, context.Background(), d, p, ep).wantOK(t)
	r := s.Requests()
	if len(r) != 5 {
		t.Fatalf("%d requests", len(r))
	}
	for _, q := range r {
		if q.AuthMethod != 2 || !strings.HasPrefix(q.User, "mailproxy-") || q.Pass == "" ||
			strings.Contains(q.User, "alice") || strings.Contains(q.User, "bob") {
			t.Errorf("isolation credentials %q/%q", q.User, q.Pass)
		}
	}
	pair := func(i int) string { return r[i].User + "/" + r[i].Pass }
	if pair(0) != pair(2) {
		t.Error("one account got two different SOCKS credentials")
	}
	if pair(0) == pair(1) || pair(3) == pair(4) || pair(3) == pair(0) {
		t.Error("two accounts (or two account-less dials) share SOCKS credentials")
	}
	// Another provider: other credentials for the same account.
	p.Name = "other"
	socksDial(t, WithAccount(context.Background(), "alice@example.test"), d, p, ep).wantOK(t)
	if r := s.Requests(); r[5].User == r[0].User {
		t.Error("one account shares SOCKS credentials across providers")
	}
}

// Every SOCKS reply code becomes a clear error, not a policy refusal.
func TestSOCKSErrors(t *testing.T) {
	s := testkit.NewSOCKS5(t, nil)
	p, port := namedServer(t, "mail.example.test", viaOf(s, true))
	ep := policy.Endpoint{Proto: policy.IMAP, Host: "mail.example.test", Port: uint16(port)}
	d := &Dialer{Resolver: noDNS(t), Timeout: 10 * time.Second}
	want := map[byte]string{
		1: "general failure", 2: "rules do not allow", 3: "network unreachable", 4: "host unreachable",
		5: "refused the connection", 6: "TTL expired", 7: "does not support CONNECT", 8: "kind of address",
		0xF0: "descriptor cannot be found", 0xF1: "descriptor is invalid", 0xF2: "introduction failed",
		0xF3: "rendezvous failed", 0xF4: "needs client authorization", 0xF5: "refused the client authorization",
		0xF6: "onion address is invalid", 0xF7: "introduction timed out", 0x42: "unknown code: 66",
	}
	for code, text := range want {
		s.SetReply(code)
		r := socksDial(t, context.Background(), d, p, ep)
		var se *SOCKSError
		if !errors.As(r.err, &se) || se.Reply != int(code) || !strings.Contains(r.err.Error(), text) ||
			!strings.Contains(r.err.Error(), "mail.example.test:"+strconv.Itoa(port)) {
			t.Errorf("reply %#x: %v (want %q)", code, r.err, text)
		}
		if r.denied != nil || r.tls != nil {
			t.Errorf("reply %#x audited %v %v", code, r.denied, r.tls)
		}
	}
	s.SetReply(0)

	// No proxy listening.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	p.Via = &policy.Via{Addr: closed, RemoteDNS: true}
	r := socksDial(t, context.Background(), d, p, ep)
	var se *SOCKSError
	if !errors.As(r.err, &se) || se.Reply != 0 || !strings.Contains(r.err.Error(), "cannot connect to the proxy") {
		t.Errorf("proxy down: %v", r.err)
	}

	// A proxy that never answers: a timeout, which stays one.
	silent := serveRaw(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p.Via = &policy.Via{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(silent)), RemoteDNS: true}
	d.Timeout = 300 * time.Millisecond
	r = socksDial(t, context.Background(), d, p, ep)
	var ne net.Error
	if !errors.As(r.err, &se) || !errors.As(r.err, &ne) || !ne.Timeout() || !strings.Contains(r.err.Error(), "in time") {
		t.Errorf("silent proxy: %v", r.err)
	}
	// Not a SOCKS5 server.
	http := serveRaw(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	p.Via = &policy.Via{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(http)), RemoteDNS: true}
	d.Timeout = 5 * time.Second
	r = socksDial(t, context.Background(), d, p, ep)
	if !errors.As(r.err, &se) || !strings.Contains(r.err.Error(), "does not speak SOCKS5") {
		t.Errorf("HTTP server as proxy: %v", r.err)
	}
}
