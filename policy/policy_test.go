package policy

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseEndpoint(t *testing.T) {
	good := func(raw string, want Endpoint) {
		t.Helper()
		got, err := ParseEndpoint(raw)
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", raw, err)
			return
		}
		if got != want {
			t.Errorf("ParseEndpoint(%q) = %+v, want %+v", raw, got, want)
		}
	}
	bad := func(raw, wantInErr string) {
		t.Helper()
		_, err := ParseEndpoint(raw)
		if err == nil || !strings.Contains(err.Error(), wantInErr) {
			t.Errorf("ParseEndpoint(%q) = %v, want error containing %q", raw, err, wantInErr)
		}
	}
	good("imaps://mail.example.com:993", Endpoint{IMAP, ImplicitTLS, "mail.example.com", 993})
	good("imap://Mail.Example.COM.", Endpoint{IMAP, STARTTLS, "mail.example.com", 143}) // default port, case, dot
	good("pop3s://mail.example.com", Endpoint{POP3, ImplicitTLS, "mail.example.com", 995})
	good("pop3://mail.example.com:1110", Endpoint{POP3, STARTTLS, "mail.example.com", 1110})
	good("smtps://mail.example.com", Endpoint{SMTP, ImplicitTLS, "mail.example.com", 465})
	good("smtp://mail.example.com", Endpoint{SMTP, STARTTLS, "mail.example.com", 587}) // submission, never 25
	good("imaps://[::1]:993", Endpoint{IMAP, ImplicitTLS, "::1", 993})
	good("imaps://127.0.0.1:1993/", Endpoint{IMAP, ImplicitTLS, "127.0.0.1", 1993})
	bad("http://mail.example.com", "unknown scheme")
	bad("imaps://user:pw@mail.example.com", "nothing else")
	bad("imaps://mail.example.com/INBOX", "nothing else")
	bad("imaps://mail.example.com:0", "bad port")
	bad("imaps://mail.example.com:99999", "bad port")
	bad("mail.example.com:993", "not an endpoint URL")
	bad("imaps://bad_host!:993", "not a valid host name")
	bad("", "not an endpoint URL")

	e, _ := ParseEndpoint("smtp://mail.example.com")
	if got := e.String(); got != "smtp://mail.example.com:587" {
		t.Errorf("String() = %q", got)
	}
}

func TestMatchHost(t *testing.T) {
	cases := []struct {
		pattern, host string
		want          bool
	}{
		{"mail.example.com", "mail.example.com", true},
		{"mail.example.com", "MAIL.example.com.", true}, // case and trailing dot
		{"mail.example.com", "imap.example.com", false},
		{"*.example.com", "imap.example.com", true},
		{"*.example.com", "example.com", false},           // the star is one label, not zero
		{"*.example.com", "a.b.example.com", false},       // nor two
		{"*.example.com", "imap.example.com.evil", false}, // suffix tricks
		{"*.example.com", "imapexample.com", false},
		{"*.example.com", ".example.com", false},
		{"127.0.0.1", "127.0.0.1", true},
		{"mail.example.com", "", false},
	}
	for _, c := range cases {
		if got := MatchHost(c.pattern, c.host); got != c.want {
			t.Errorf("MatchHost(%q, %q) = %v, want %v", c.pattern, c.host, got, c.want)
		}
	}
	for _, p := range []string{"*.com", "*", "mail.*.com", "*.*.example.com", "bad host"} {
		if ValidHostPattern(p) == nil {
			t.Errorf("ValidHostPattern(%q) accepted a pattern it should refuse", p)
		}
	}
	for _, p := range []string{"*.example.com", "mail.example.com", "::1", "10.0.0.1"} {
		if err := ValidHostPattern(p); err != nil {
			t.Errorf("ValidHostPattern(%q): %v", p, err)
		}
	}
}

func TestParseLogin(t *testing.T) {
	cases := []struct {
		in   string
		want Login
	}{
		{"alice", Login{User: "alice"}},
		{"alice@Example.com", Login{User: "alice@Example.com", Domain: "example.com"}},
		{"alice@example.com@imap.evil.test", Login{User: "alice@example.com", Domain: "example.com", Host: "imap.evil.test"}},
		{"alice#imap.evil.test", Login{User: "alice", Host: "imap.evil.test"}},
		{"alice@example.com#mail.example.com", Login{User: "alice@example.com", Domain: "example.com", Host: "mail.example.com"}},
		{"alice%hosted.example", Login{User: "alice%hosted.example"}}, // Runbox account name, not a route
		{"", Login{}},
	}
	for _, c := range cases {
		if got := ParseLogin(c.in); got != c.want {
			t.Errorf("ParseLogin(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func testProviders() (*Provider, *Provider) {
	ex := &Provider{
		Name: "example", Hosts: []string{"mail.example.com", "*.example.com"}, Domains: []string{"example.com", "example.org"},
		Endpoints: map[Proto]Endpoint{IMAP: {IMAP, ImplicitTLS, "mail.example.com", 993}},
	}
	other := &Provider{
		Name: "other", Hosts: []string{"imap.other.test"}, Domains: []string{"other.test"},
		Endpoints: map[Proto]Endpoint{IMAP: {IMAP, STARTTLS, "imap.other.test", 143}, SMTP: {SMTP, ImplicitTLS, "imap.other.test", 465}},
	}
	return ex, other
}

func TestRouteLogin(t *testing.T) {
	ex, other := testProviders()
	all := []*Provider{ex, other}
	good := func(fixed *Provider, proto Proto, login string, wantProv, wantHost, wantUser string) {
		t.Helper()
		r, err := RouteLogin(all, fixed, proto, login)
		if err != nil {
			t.Errorf("RouteLogin(%q): %v", login, err)
			return
		}
		if r.Provider.Name != wantProv || r.Endpoint.Host != wantHost || r.User != wantUser {
			t.Errorf("RouteLogin(%q) = %s %s %q, want %s %s %q", login, r.Provider.Name, r.Endpoint.Host, r.User, wantProv, wantHost, wantUser)
		}
	}
	bad := func(fixed *Provider, proto Proto, login string, wantHost string) {
		t.Helper()
		_, err := RouteLogin(all, fixed, proto, login)
		var d *Denied
		if !errors.As(err, &d) || d.Reason != ReasonNonProviderHost || d.Host != wantHost {
			t.Errorf("RouteLogin(%q) = %v, want non_provider_host refusal about %q", login, err, wantHost)
		}
		if !errors.Is(err, ReasonNonProviderHost) {
			t.Errorf("errors.Is(%v, ReasonNonProviderHost) = false", err)
		}
	}
	// Fixed provider: any login goes there; a named host must be allowed.
	good(ex, IMAP, "alice", "example", "mail.example.com", "alice")
	good(ex, IMAP, "alice@anything.test", "example", "mail.example.com", "alice@anything.test")
	good(ex, IMAP, "alice@example.com@imap.example.com", "example", "imap.example.com", "alice@example.com")
	bad(ex, IMAP, "alice@example.com@imap.evil.test", "imap.evil.test")
	bad(ex, IMAP, "alice#127.0.0.1", "127.0.0.1")
	// "*": the domain picks the provider.
	good(nil, IMAP, "bob@example.org", "example", "mail.example.com", "bob@example.org")
	good(nil, IMAP, "carol@OTHER.test", "other", "imap.other.test", "carol@OTHER.test")
	good(nil, IMAP, "carol#imap.other.test", "other", "imap.other.test", "carol")
	bad(nil, IMAP, "dave@unknown.test", "unknown.test")
	bad(nil, IMAP, "dave", "")                // no domain: a clear refusal, not a crash
	bad(nil, IMAP, "dave%hosted.example", "") // '%' is not a route
	bad(nil, IMAP, "bob@example.org@evil.test", "evil.test")
	bad(nil, SMTP, "bob@example.org", "example.org") // provider has no smtp endpoint
}

func TestCheckAddr(t *testing.T) {
	cases := []struct {
		addr         string
		allowPrivate bool
		ok           bool
	}{
		{"93.184.215.14", false, true},
		{"2a00:1450:4001:80b::200e", false, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1", true, true},
		{"::1", false, false},
		{"::ffff:127.0.0.1", false, false}, // v4-mapped loopback
		{"10.1.2.3", false, false},
		{"172.16.0.1", false, false},
		{"192.168.1.1", false, false},
		{"169.254.169.254", false, false}, // cloud metadata, link-local
		{"fe80::1", false, false},
		{"fd00::1", false, false},
		{"100.64.0.1", false, false},        // CGNAT
		{"64:ff9b::a00:1", false, false},    // NAT64 of 10.0.0.1
		{"64:ff9b::5db8:d70e", false, true}, // NAT64 of a public address
		{"2002:c0a8:0101::1", false, false}, // 6to4 of 192.168.1.1
		{"::7f00:1", false, false},          // IPv4-compatible 127.0.0.1
		{"::a00:1", false, false},           // IPv4-compatible 10.0.0.1
		{"::ffff:0:7f00:1", false, false},   // IPv4-translated 127.0.0.1
		{"::5db8:d70e", false, false},       // IPv4-compatible, deprecated whatever it holds
		{"4000::1", false, false},           // outside global unicast
		{"2001:4860:4860::8888", false, true},
		{"0.0.0.0", true, false}, // never, even with allow_private_addresses
		{"::", true, false},
		{"224.0.0.1", true, false},
		{"255.255.255.255", true, false},
		{"10.1.2.3", true, true},
	}
	for _, c := range cases {
		err := CheckAddr("mail.example.com", netip.MustParseAddr(c.addr), c.allowPrivate)
		if (err == nil) != c.ok {
			t.Errorf("CheckAddr(%s, allowPrivate=%v) = %v, want ok=%v", c.addr, c.allowPrivate, err, c.ok)
		}
		if err != nil && !errors.Is(err, ReasonPrivateAddress) {
			t.Errorf("CheckAddr(%s): %v is not a private_address refusal", c.addr, err)
		}
	}
}

func TestTLSVersions(t *testing.T) {
	for s, want := range map[string]uint16{"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13} {
		if got, err := ParseTLSVersion(s); err != nil || got != want {
			t.Errorf("ParseTLSVersion(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"3.0", "ssl3", "1.4", "", "TLS1.2"} {
		if _, err := ParseTLSVersion(s); err == nil {
			t.Errorf("ParseTLSVersion(%q) accepted", s)
		}
	}
	if got := TLSVersionName(tls.VersionTLS13); got != "TLS1.3" {
		t.Errorf("TLSVersionName = %q", got)
	}
	if got := TLSVersionName(0x0300); got != "SSLv3" {
		t.Errorf("TLSVersionName(0x0300) = %q", got)
	}
}

// decode splits an audit stream into its events.
func decode(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestAuditContract(t *testing.T) {
	var buf bytes.Buffer
	a := NewAudit(&buf, 0)
	a.ListenerStart("127.0.0.1:1143", IMAP, "example", "imaps://mail.example.com:993")
	s := a.Session("c1", IMAP)
	s.Start("127.0.0.1:50000", "example")
	s.UpstreamConnect("mail.example.com", "93.184.215.14:993")
	s.UpstreamTLS(TLSFacts{Host: "mail.example.com", Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256,
		Group: tls.X25519MLKEM768, Verified: true, SPKISHA256: "abc=", Pinned: true, Provider: "example", NotAfter: time.Date(2027, 1, 12, 0, 0, 0, 0, time.UTC)})
	s.Auth("alice@example.com", false)
	if !s.Denied(Deny(ReasonPin, "mail.example.com", "no pin matched")) {
		t.Error("Denied did not write a *Denied")
	}
	if s.Denied(errors.New("plain error")) {
		t.Error("Denied wrote an event for an error that is not a refusal")
	}
	s.End(SessionStats{BytesUp: 10, BytesDown: 20, Duration: 1500 * time.Millisecond, Err: errors.New("line1\nline2")})

	ev := decode(t, buf.Bytes())
	want := []struct {
		msg    string
		fields map[string]any
	}{
		{EventListenerStart, map[string]any{"address": "127.0.0.1:1143", "proto": "imap", "provider": "example", "upstream": "imaps://mail.example.com:993"}},
		{EventSessionStart, map[string]any{"conn": "c1", "proto": "imap", "client": "127.0.0.1:50000", "provider": "example"}},
		{EventUpstreamConnect, map[string]any{"conn": "c1", "host": "mail.example.com", "addr": "93.184.215.14:993"}},
		{EventUpstreamTLS, map[string]any{"tls_version": "TLS1.3", "cipher": "TLS_AES_128_GCM_SHA256", "group": "X25519MLKEM768", "verified": true, "spki_sha256": "abc=", "pin": "ok", "provider": "example", "not_after": "2027-01-12T00:00:00Z"}},
		{EventAuth, map[string]any{"user": "alice@example.com", "result": "fail"}},
		{EventDenied, map[string]any{"reason": "pin", "host": "mail.example.com", "detail": "no pin matched"}},
		{EventSessionEnd, map[string]any{"bytes_up": 10.0, "bytes_down": 20.0, "duration_ms": 1500.0, "error": "line1 line2"}},
	}
	if len(ev) != len(want) {
		t.Fatalf("got %d events, want %d:\n%s", len(ev), len(want), buf.String())
	}
	for i, w := range want {
		if ev[i]["msg"] != w.msg {
			t.Errorf("event %d msg = %v, want %s", i, ev[i]["msg"], w.msg)
		}
		if _, ok := ev[i]["time"]; !ok {
			t.Errorf("event %d has no time", i)
		}
		for k, v := range w.fields {
			if ev[i][k] != v {
				t.Errorf("event %s field %s = %#v, want %#v", w.msg, k, ev[i][k], v)
			}
		}
	}
	if _, ok := ev[6]["messages"]; ok {
		t.Error("session.end of a non-SMTP session carries message counts")
	}
	if strings.Count(buf.String(), "\n") != len(want) {
		t.Error("events are not one a line")
	}
}

func TestAuditLegacyWarning(t *testing.T) {
	var buf bytes.Buffer
	NewAudit(&buf, 0).Session("c2", POP3).UpstreamTLS(TLSFacts{Host: "old.example", Version: tls.VersionTLS10,
		CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, Group: tls.X25519, Verified: true, Legacy: true})
	ev := decode(t, buf.Bytes())
	if ev[0]["level"] != "WARN" || ev[0]["warning"] == nil || ev[0]["tls_version"] != "TLS1.0" || ev[0]["pin"] != "none" {
		t.Errorf("legacy handshake event = %v", ev[0])
	}
}
