package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/internal/certs"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/tlsconf/trust"
)

// rotatingServer serves, on each new connection, the next certificate of
// certs (the last one again once they run out).
func rotatingServer(t *testing.T, chain ...tls.Certificate) int {
	t.Helper()
	var n atomic.Int32
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		i := min(int(n.Add(1))-1, len(chain)-1)
		return &chain[i], nil
	}}
	return serveTLS(t, cfg)
}

func newCA(t *testing.T, name string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *certs.CA) tls.Certificate {
	t.Helper()
	c, err := ca.Issue(certs.Leaf{Names: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tofuDial dials 127.0.0.1:port with a dialer holding store.
func tofuDial(t *testing.T, store *trust.Store, p *policy.Provider, port int) dialResult {
	t.Helper()
	ab := &testkit.Audit{}
	d := &Dialer{Timeout: 10 * time.Second, Trust: store}
	ep := policy.Endpoint{Proto: policy.IMAP, Security: policy.ImplicitTLS, Host: "127.0.0.1", Port: uint16(port)}
	up, err := d.Dial(context.Background(), p, ep, policy.NewAudit(ab, 0).Session("t1", policy.IMAP))
	r := dialResult{up: up, err: err, audit: ab}
	if up != nil {
		up.Close()
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

func pinOf(c *x509.Certificate) string { return FormatPin(SPKIHash(c)) }

func wantTOFU(t *testing.T, r dialResult, tofu, anchor string) {
	t.Helper()
	r.wantOK(t)
	if r.tls["tofu"] != tofu || r.tls["anchor_sha256"] != anchor {
		t.Fatalf("upstream.tls tofu=%v anchor_sha256=%v, want %s %s", r.tls["tofu"], r.tls["anchor_sha256"], tofu, anchor)
	}
}

// A root swapped between two connections, both roots trusted by ca_file,
// is what interception by a root the machine trusts looks like: the
// second connection is refused (pin) with both anchors named, and
// accepting the new anchor restores service.
func TestTOFURootSwapRefused(t *testing.T) {
	caA, caB := newCA(t, "Provider Root A"), newCA(t, "Interceptor Root B")
	pool := x509.NewCertPool()
	pool.AddCert(caA.Cert)
	pool.AddCert(caB.Cert)
	p := &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, TLS: policy.TLSPolicy{Roots: pool}, AllowPrivateAddresses: true}
	port := rotatingServer(t, issue(t, caA), issue(t, caB))
	store := trust.Open(t.TempDir())

	wantTOFU(t, tofuDial(t, store, p, port), policy.TOFULearned, pinOf(caA.Cert))

	r := tofuDial(t, store, p, port)
	r.wantDenied(t, policy.ReasonPin)
	detail := r.denied["detail"].(string)
	for _, want := range []string{`"Provider Root A"`, `"Interceptor Root B"`, pinOf(caA.Cert), pinOf(caB.Cert),
		"mailproxy trust accept 127.0.0.1", "CN=Provider Root A", "CN=Interceptor Root B"} {
		if !strings.Contains(detail, want) {
			t.Errorf("policy.denied detail lacks %q:\n%s", want, detail)
		}
	}
	// What the app is shown names the CAs and the way out, within what
	// proxy.Explain passes on (200 bytes).
	var den *policy.Denied
	if !errors.As(r.err, &den) || len(den.Detail) > 200 || !strings.Contains(den.Detail, "mailproxy trust accept 127.0.0.1") ||
		strings.Contains(den.Detail, "sha256/") {
		t.Errorf("the app's text = %q", den.Detail)
	}
	// Refused again, not re-learned.
	tofuDial(t, store, p, port).wantDenied(t, policy.ReasonPin)

	// What `mailproxy trust accept` does: remember the new anchor.
	if _, had, err := store.Replace(AnchorRecord("127.0.0.1", caB.Cert, time.Now())); err != nil || !had {
		t.Fatalf("Replace: had=%v err=%v", had, err)
	}
	wantTOFU(t, tofuDial(t, store, p, port), policy.TOFUMatch, pinOf(caB.Cert))
}

// A new leaf key and a new intermediate under the same root: accepted.
func TestTOFURotationUnderSameRootAccepted(t *testing.T) {
	root := newCA(t, "Provider Root")
	i1, err := root.Intermediate("Provider Issuing CA 1")
	if err != nil {
		t.Fatal(err)
	}
	i2, err := root.Intermediate("Provider Issuing CA 2")
	if err != nil {
		t.Fatal(err)
	}
	p := &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, TLS: policy.TLSPolicy{Roots: root.Pool()}, AllowPrivateAddresses: true}
	l1, l2 := issue(t, i1), issue(t, i2)
	port := rotatingServer(t, l1, l2)
	store := trust.Open(t.TempDir())

	r1 := tofuDial(t, store, p, port)
	wantTOFU(t, r1, policy.TOFULearned, pinOf(root.Cert))
	r2 := tofuDial(t, store, p, port)
	wantTOFU(t, r2, policy.TOFUMatch, pinOf(root.Cert))
	if r1.tls["spki_sha256"] == r2.tls["spki_sha256"] {
		t.Fatal("the server did not rotate its leaf key")
	}
}

// The store survives a restart: a new Store on the same folder (a new
// process) still refuses the swapped root.
func TestTOFUSurvivesRestart(t *testing.T) {
	caA, caB := newCA(t, "Root A"), newCA(t, "Root B")
	pool := x509.NewCertPool()
	pool.AddCert(caA.Cert)
	pool.AddCert(caB.Cert)
	p := &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, TLS: policy.TLSPolicy{Roots: pool}, AllowPrivateAddresses: true}
	port := rotatingServer(t, issue(t, caA), issue(t, caB))
	dir := t.TempDir()
	wantTOFU(t, tofuDial(t, trust.Open(dir), p, port), policy.TOFULearned, pinOf(caA.Cert))
	tofuDial(t, trust.Open(dir), p, port).wantDenied(t, policy.ReasonPin)
}

// tofu = false, pins, and a dialer without a store: nothing is remembered
// nor compared, and upstream.tls says tofu "off" with the anchor.
func TestTOFUOff(t *testing.T) {
	caA, caB := newCA(t, "Root A"), newCA(t, "Root B")
	pool := x509.NewCertPool()
	pool.AddCert(caA.Cert)
	pool.AddCert(caB.Cert)
	leafA, leafB := issue(t, caA), issue(t, caB)

	t.Run("tofu=false", func(t *testing.T) {
		p := &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, TLS: policy.TLSPolicy{Roots: pool, NoTOFU: true}, AllowPrivateAddresses: true}
		port := rotatingServer(t, leafA, leafB)
		dir := t.TempDir()
		wantTOFU(t, tofuDial(t, trust.Open(dir), p, port), policy.TOFUOff, pinOf(caA.Cert))
		wantTOFU(t, tofuDial(t, trust.Open(dir), p, port), policy.TOFUOff, pinOf(caB.Cert))
		if _, err := os.Stat(trust.Open(dir).Path()); !os.IsNotExist(err) {
			t.Errorf("tofu = false wrote the store: %v", err)
		}
	})
	t.Run("pins take precedence", func(t *testing.T) {
		pins := [][32]byte{SPKIHash(leafA.Leaf), SPKIHash(leafB.Leaf)}
		p := &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, TLS: policy.TLSPolicy{Roots: pool, Pins: pins}, AllowPrivateAddresses: true}
		port := rotatingServer(t, leafA, leafB)
		store := trust.Open(t.TempDir())
		wantTOFU(t, tofuDial(t, store, p, port), policy.TOFUOff, pinOf(caA.Cert))
		wantTOFU(t, tofuDial(t, store, p, port), policy.TOFUOff, pinOf(caB.Cert))
	})
	t.Run("no store", func(t *testing.T) {
		p := &policy.Provider{Name: "test", Hosts: []string{"127.0.0.1"}, TLS: policy.TLSPolicy{Roots: pool}, AllowPrivateAddresses: true}
		port := rotatingServer(t, leafA, leafB)
		wantTOFU(t, tofuDial(t, nil, p, port), policy.TOFUOff, pinOf(caA.Cert))
		wantTOFU(t, tofuDial(t, nil, p, port), policy.TOFUOff, pinOf(caB.Cert))
	})
}

// A damaged store refuses the connection (it is never taken as empty,
// which would re-learn whatever root is presented).
func TestTOFUDamagedStoreRefuses(t *testing.T) {
	pk := newPKI(t)
	dir := t.TempDir()
	if err := os.WriteFile(trust.Open(dir).Path(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{pk.ecdsa}})
	tofuDial(t, trust.Open(dir), pk.provider(), port).wantDenied(t, policy.ReasonPin)
}

// When two chains verify, the anchor already remembered is preferred, and
// otherwise the choice does not depend on the chains' order.
func TestAnchorChoice(t *testing.T) {
	a, b := newCA(t, "A"), newCA(t, "B")
	ch := func(roots ...*certs.CA) tls.ConnectionState {
		var cs tls.ConnectionState
		for _, r := range roots {
			cs.VerifiedChains = append(cs.VerifiedChains, []*x509.Certificate{r.Cert})
		}
		return cs
	}
	if Anchor(ch(a, b), "") != Anchor(ch(b, a), "") {
		t.Error("the anchor depends on the order of the verified chains")
	}
	for _, want := range []*certs.CA{a, b} {
		if got := Anchor(ch(a, b), pinOf(want.Cert)); got != want.Cert {
			t.Errorf("remembered %s, chose %s", want.Cert.Subject, got.Subject)
		}
	}
	if Anchor(tls.ConnectionState{}, "") != nil {
		t.Error("an anchor without a verified chain")
	}
}
