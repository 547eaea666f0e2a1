// Package deep asks a provider's server what it still accepts from other
// clients — SSLv3, TLS 1.0 and 1.1, RSA key exchange, DHE, 3DES, RC4, CBC,
// NULL and EXPORT suites — and whether it honours TLS_FALLBACK_SCSV, with
// hand-built ClientHello messages (package hello), for `mailproxy check
// -deep`. mailproxy itself never uses any of these: the policy keeps it on
// ECDHE with AEAD suites. The answers matter for the other apps of the
// user, which may.
//
// Each probe is one connection made by the policed dialer
// (tlsconf.Dialer.DialBeforeTLS: allowlist, address checks, upstream.connect
// audited, STARTTLS done first where the endpoint needs it), one hello
// sent, the server's ServerHello or alert read, and the connection closed.
// No handshake is ever completed, nothing is sent after the hello, and no
// credential is involved.
package deep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"mailproxy/policy"
	"mailproxy/tlsconf"
	"mailproxy/tlsconf/hello"
)

// The probes' names, as the JSON keys spell them.
const (
	SSLv3          = "sslv3"
	TLS10          = "tls1_0"
	TLS11          = "tls1_1"
	RSAKeyExchange = "rsa_kx"
	DHE            = "dhe"
	TripleDES      = "3des"
	RC4            = "rc4"
	CBC            = "cbc"
	NULL           = "null"
	Export         = "export"
	FallbackSCSV   = "fallback_scsv"
	Preferred      = "preferred_suite"
)

// Result is one probe's outcome.
type Result struct {
	Name string
	// Accepted: the server chose what the probe offered (for
	// fallback_scsv: the server honours the SCSV).
	Accepted bool
	// Version and Suite are what the ServerHello chose, if one came.
	Version, Suite uint16
	// Note says more in words: the alert, a hang-up, why SCSV was not
	// needed.
	Note string
	// Err is set when the probe learned nothing (timeout, unreachable);
	// Accepted is then false and means nothing.
	Err error
}

// Report is every probe's outcome for one endpoint.
type Report struct {
	Endpoint policy.Endpoint
	Results  []Result
}

// Result returns the named probe's result.
func (r *Report) Result(name string) (Result, bool) {
	for _, x := range r.Results {
		if x.Name == name {
			return x, true
		}
	}
	return Result{}, false
}

// prober runs probes against one endpoint.
type prober struct {
	d     *tlsconf.Dialer
	p     *policy.Provider
	ep    policy.Endpoint
	audit *policy.SessionAudit
}

// Run probes ep of provider p. A refusal by the policy before any hello
// could be sent (a host outside the allowlist, a private address, a
// STARTTLS the server refused) ends the run and is returned: it is
// audited by the dialer and is the same for every probe.
func Run(ctx context.Context, d *tlsconf.Dialer, p *policy.Provider, ep policy.Endpoint, audit *policy.SessionAudit) (*Report, error) {
	pr := &prober{d: d, p: p, ep: ep, audit: audit}
	rep := &Report{Endpoint: ep}
	oldClient := pick(func(s suite) bool { return usual(s) && !s.tls12 })
	versionProbe := func(name string, v uint16) error {
		ans, err := pr.send(ctx, hello.Hello{Version: v, Suites: oldClient, NoExtensions: v == hello.SSLv3})
		r := Result{Name: name}
		switch {
		case err != nil:
			return pr.fail(rep, r, err)
		case ans.Accepted() && ans.Version == v:
			r.Accepted, r.Version, r.Suite = true, ans.Version, ans.Suite
		case ans.Accepted():
			r.Version, r.Suite = ans.Version, ans.Suite
			r.Note = fmt.Sprintf("answered with %s, a version not offered", versionName(ans.Version))
		default:
			r.Note = ans.note
		}
		rep.Results = append(rep.Results, r)
		return nil
	}
	suiteProbe := func(name string, keep func(suite) bool) error {
		offer := pick(keep)
		ans, err := pr.send(ctx, hello.Hello{Suites: offer})
		r := Result{Name: name}
		switch {
		case err != nil:
			return pr.fail(rep, r, err)
		case ans.Accepted() && contains(offer, ans.Suite):
			r.Accepted, r.Version, r.Suite = true, ans.Version, ans.Suite
		case ans.Accepted():
			r.Version, r.Suite = ans.Version, ans.Suite
			r.Note = "chose a suite that was not offered: " + SuiteName(ans.Suite)
		default:
			r.Note = ans.note
		}
		rep.Results = append(rep.Results, r)
		return nil
	}

	steps := []func() error{
		func() error { return versionProbe(SSLv3, hello.SSLv3) },
		func() error { return versionProbe(TLS10, hello.TLS10) },
		func() error { return versionProbe(TLS11, hello.TLS11) },
		func() error {
			return suiteProbe(RSAKeyExchange, func(s suite) bool { return usual(s) && s.kx == kxRSA })
		},
		func() error { return suiteProbe(DHE, func(s suite) bool { return usual(s) && s.kx == kxDHE }) },
		func() error { return suiteProbe(TripleDES, func(s suite) bool { return s.enc == enc3DES }) },
		func() error { return suiteProbe(RC4, func(s suite) bool { return s.enc == encRC4 }) },
		func() error {
			return suiteProbe(CBC, func(s suite) bool { return s.enc == encCBC || s.enc == enc3DES })
		},
		func() error { return suiteProbe(NULL, func(s suite) bool { return s.enc == encNULL }) },
		func() error { return suiteProbe(Export, func(s suite) bool { return s.enc == encExport }) },
		func() error { return pr.fallback(ctx, rep) },
		func() error { return suiteProbe(Preferred, usual) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// fail records a probe that learned nothing; a policy refusal ends the
// run.
func (pr *prober) fail(rep *Report, r Result, err error) error {
	var den *policy.Denied
	if errors.As(err, &den) {
		return err
	}
	r.Err = err
	rep.Results = append(rep.Results, r)
	return nil
}

// fallback learns the server's highest version, then offers the one
// below it with TLS_FALLBACK_SCSV (RFC 7507): a server that honours it
// refuses with inappropriate_fallback.
func (pr *prober) fallback(ctx context.Context, rep *Report) error {
	r := Result{Name: FallbackSCSV}
	all := pick(func(suite) bool { return true })
	top, err := pr.send(ctx, hello.Hello{Suites: append(append([]uint16{}, tls13Suites...), all...),
		SupportedVersions: []uint16{hello.TLS13, hello.TLS12, hello.TLS11, hello.TLS10}})
	if err != nil {
		return pr.fail(rep, r, err)
	}
	if !top.Accepted() {
		r.Err = fmt.Errorf("the server refused a hello offering every version (%s)", top.note)
		rep.Results = append(rep.Results, r)
		return nil
	}
	max := top.Version
	if max <= hello.TLS10 {
		r.Accepted = true
		r.Note = fmt.Sprintf("not needed: the server's highest version is %s", versionName(max))
		rep.Results = append(rep.Results, r)
		return nil
	}
	lower := max - 1
	offer := all
	if lower < hello.TLS12 {
		offer = pick(func(s suite) bool { return !s.tls12 })
	}
	ans, err := pr.send(ctx, hello.Hello{Version: lower, Suites: append(append([]uint16{}, offer...), hello.FallbackSCSV)})
	if err != nil {
		return pr.fail(rep, r, err)
	}
	switch {
	case ans.Alert && ans.AlertDesc == hello.AlertInappropriateFallback:
		r.Accepted = true
		r.Note = fmt.Sprintf("a fallback to %s was refused (inappropriate_fallback)", versionName(lower))
	case ans.Accepted():
		r.Version, r.Suite = ans.Version, ans.Suite
		r.Note = fmt.Sprintf("a fallback from %s to %s was accepted", versionName(max), versionName(ans.Version))
	default:
		// The lower version is refused outright: no downgrade is possible,
		// which is what the SCSV is for.
		r.Accepted = true
		r.Note = fmt.Sprintf("not needed: the server refuses %s outright (%s)", versionName(lower), ans.note)
	}
	rep.Results = append(rep.Results, r)
	return nil
}

// answer is a server's answer, or a refusal by hanging up.
type answer struct {
	hello.Answer
	note string // for a refusal: the alert, or "hung up"
}

// send makes one policed connection, sends h and reads the answer. A
// server that hangs up without an alert refused.
func (pr *prober) send(ctx context.Context, h hello.Hello) (answer, error) {
	conn, err := pr.d.DialBeforeTLS(ctx, pr.p, pr.ep, pr.audit)
	if err != nil {
		return answer{}, err
	}
	defer conn.Close()
	h.ServerName = pr.ep.Host
	if _, err := conn.Write(h.Marshal()); err != nil {
		return answer{}, fmt.Errorf("sending the hello: %w", err)
	}
	a, err := hello.ReadAnswer(conn)
	var ne net.Error
	switch {
	case err == nil && a.Alert:
		return answer{Answer: a, note: alertName(a.AlertDesc)}, nil
	case err == nil:
		return answer{Answer: a}, nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return answer{Answer: hello.Answer{Alert: true}, note: "hung up without an alert"}, nil
	case errors.As(err, &ne) && ne.Timeout():
		return answer{}, fmt.Errorf("no answer: %w", err)
	}
	return answer{Answer: hello.Answer{Alert: true}, note: "answered with something else than TLS: " + err.Error()}, nil
}

func contains(list []uint16, v uint16) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func versionName(v uint16) string { return policy.TLSVersionName(v) }

func alertName(a uint8) string {
	switch a {
	case hello.AlertHandshakeFailure:
		return "alert handshake_failure"
	case hello.AlertProtocolVersion:
		return "alert protocol_version"
	case hello.AlertInsufficientSecurity:
		return "alert insufficient_security"
	case hello.AlertInappropriateFallback:
		return "alert inappropriate_fallback"
	}
	return fmt.Sprintf("alert %d", a)
}

// Weak lists what the server accepts that a careful server refuses: every
// accepted probe but DHE and CBC (old but not broken), and an SCSV not
// honoured.
func (r *Report) Weak() []string {
	var weak []string
	for _, x := range r.Results {
		switch {
		case x.Err != nil || x.Name == Preferred || x.Name == DHE || x.Name == CBC:
		case x.Name == FallbackSCSV && !x.Accepted:
			weak = append(weak, "no fallback SCSV")
		case x.Name != FallbackSCSV && x.Accepted:
			weak = append(weak, label(x.Name))
		}
	}
	return weak
}

// Verdict is one line about the endpoint.
func (r *Report) Verdict() string {
	var unknown []string
	for _, x := range r.Results {
		if x.Err != nil {
			unknown = append(unknown, label(x.Name))
		}
	}
	var b strings.Builder
	if weak := r.Weak(); len(weak) > 0 {
		fmt.Fprintf(&b, "WEAK: accepts %s", strings.Join(weak, ", "))
	} else {
		b.WriteString("GOOD: refuses SSLv3, TLS 1.0/1.1, RSA key exchange, 3DES, RC4, NULL and EXPORT")
	}
	var old []string
	for _, n := range []string{DHE, CBC} {
		if x, ok := r.Result(n); ok && x.Accepted {
			old = append(old, label(n))
		}
	}
	if len(old) > 0 {
		fmt.Fprintf(&b, "; still offers %s", strings.Join(old, " and "))
	}
	if len(unknown) > 0 {
		fmt.Fprintf(&b, "; unknown: %s", strings.Join(unknown, ", "))
	}
	return b.String()
}

// label names a probe for people.
func label(name string) string {
	switch name {
	case SSLv3:
		return "SSLv3"
	case TLS10:
		return "TLS 1.0"
	case TLS11:
		return "TLS 1.1"
	case RSAKeyExchange:
		return "RSA key exchange"
	case DHE:
		return "DHE"
	case TripleDES:
		return "3DES"
	case RC4:
		return "RC4"
	case CBC:
		return "CBC suites"
	case NULL:
		return "NULL suites"
	case Export:
		return "EXPORT suites"
	}
	return name
}
