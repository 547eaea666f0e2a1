package status

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailproxy/policy"
)

// auditLog writes a small audit log: three sessions from two apps, one
// refused login, a failed one, an aggregated flood of refusals, and a
// line that is not an event.
func auditLog(t testing.TB) []byte {
	var buf bytes.Buffer
	a := NewAuditForTest(&buf)
	session := func(id, client, provider string, ok bool, version uint16) {
		s := a.Session(id, policy.IMAP)
		s.Start(client, "*")
		s.UpstreamConnect("mail.example.com", "192.0.2.1:993")
		s.UpstreamTLS(policy.TLSFacts{Provider: provider, Host: "mail.example.com", Version: version,
			CipherSuite: tls.TLS_AES_128_GCM_SHA256, Group: tls.X25519MLKEM768, Verified: true})
		s.Auth("alice", ok)
		s.End(policy.SessionStats{BytesUp: 100, BytesDown: 1000, Duration: time.Second})
	}
	session("c1", "127.0.0.1:5001", "example", true, tls.VersionTLS13)
	session("c2", "127.0.0.1:5002", "example", false, tls.VersionTLS13)
	session("c3", "[::1]:5003", "other", true, tls.VersionTLS12)
	s := a.Session("c4", policy.IMAP)
	s.Start("127.0.0.1:5004", "example")
	s.Denied(policy.Deny(policy.ReasonNonProviderHost, "evil.example", "the login names server evil.example"))
	s.End(policy.SessionStats{BytesUp: 10, BytesDown: 20, Err: errors.New("refused")})
	buf.WriteString("mailproxy: some other output\n")
	for range 4 {
		a.Refused("127.0.0.1:1143", policy.IMAP, netip.MustParseAddr("192.0.2.9"), policy.Deny(policy.ReasonRemoteClient, "192.0.2.9", "not in allow_clients"))
	}
	a.Close()
	return buf.Bytes()
}

// NewAuditForTest is an audit log at info level.
func NewAuditForTest(buf *bytes.Buffer) *policy.Audit { return policy.NewAudit(buf, slog.LevelInfo) }

func TestReport(t *testing.T) {
	log := auditLog(t)
	r, err := ReadReport(bytes.NewReader(log), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions != 4 || r.LoginsOK != 2 || r.LoginsFail != 1 || r.BytesUp != 310 || r.BytesDown != 3020 || r.Skipped != 1 {
		t.Errorf("totals: %+v", r)
	}
	want := map[string]int64{"127.0.0.1 example": 3, "::1 other": 1}
	if len(r.SessionsBy) != 2 {
		t.Errorf("sessions by app and provider: %+v", r.SessionsBy)
	}
	for _, c := range r.SessionsBy {
		if want[strings.Join(c.Key, " ")] != c.N {
			t.Errorf("sessions of %v: %d", c.Key, c.N)
		}
	}
	if len(r.TLSVersion) != 2 || r.TLSVersion[0].Key[0] != "TLS1.3" || r.TLSVersion[0].N != 2 || r.Suites[0].N != 3 {
		t.Errorf("TLS: %+v %+v", r.TLSVersion, r.Suites)
	}
	// The flood of 4 refusals: one written, three counted in one event.
	if r.RefusalTotal != 5 || len(r.Refusals) != 2 || r.Refusals[0].Reason != "remote_client" || r.Refusals[0].N != 4 || r.Refusals[1].Host != "evil.example" {
		t.Errorf("refusals: %d %+v", r.RefusalTotal, r.Refusals)
	}

	var text bytes.Buffer
	r.WriteText(&text, "audit.jsonl")
	for _, s := range []string{`Sessions: 4 `, `127\.0\.0\.1\s+example\s+3\n`, `TLS1\.3\s+2\n`, `Refusals: 5\n`, `remote_client\s+192\.0\.2\.9\s+4\s`} {
		if !regexp.MustCompile(s).MatchString(text.String()) {
			t.Errorf("text lacks %q:\n%s", s, text.String())
		}
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page, "audit.jsonl"); err != nil {
		t.Fatal(err)
	}
	if p := page.String(); strings.Count(p, "<svg") != 4 || strings.Contains(p, "<script") || strings.Contains(p, "http://") || strings.Contains(p, "https://") {
		t.Errorf("the page is not self-contained with four charts:\n%s", p)
	}

	// -since: nothing of the past.
	r, _ = ReadReport(bytes.NewReader(log), time.Now().Add(time.Hour))
	if r.Events != 0 || r.Sessions != 0 || r.Skipped != r.Lines {
		t.Errorf("since the future: %+v", r)
	}
}

// FuzzReadReport reads arbitrary logs: no panic, and the totals never
// exceed what the lines could hold.
func FuzzReadReport(f *testing.F) {
	f.Add(auditLog(f))
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","level":"WARN","msg":"policy.denied","count":-5}` + "\n"))
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","msg":"session.start","conn":"a","client":"x"}` + "\n" + `{"time":"2026-01-01T00:00:00Z","msg":"session.start","conn":"a"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadReport(bytes.NewReader(data), time.Time{})
		if err != nil {
			return
		}
		if r.Events+r.Skipped != r.Lines || r.Sessions > r.Events {
			t.Fatalf("%d events + %d skipped != %d lines, or %d sessions", r.Events, r.Skipped, r.Lines, r.Sessions)
		}
		var b bytes.Buffer
		if err := r.WriteText(&b, "x"); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteHTML(&b, "x"); err != nil {
			t.Fatal(err)
		}
	})
}
