package policy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestObserverSeesWhatTheLogSays: every event an observer gets is, field
// for field, the event ParseEvent reads back from the line written, and
// the observer sees events below the log's level too.
func TestObserverSeesWhatTheLogSays(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	var seen []Event
	a := NewAudit(&buf, slog.LevelInfo, func(e Event) {
		mu.Lock()
		seen = append(seen, e)
		mu.Unlock()
	})
	a.ListenerStart("127.0.0.1:1143", IMAP, "example", "imaps://mail.example.com:993")
	s := a.Session("c1", IMAP)
	s.Start("127.0.0.1:5000", "example")
	s.UpstreamConnect("mail.example.com", "192.0.2.1:993")
	s.UpstreamTLS(TLSFacts{Host: "mail.example.com", Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, Group: tls.X25519, Verified: true})
	s.Auth("alice\n", true)
	s.Denied(Deny(ReasonLimit, "", "too many"))
	s.End(SessionStats{BytesUp: 10, BytesDown: 2000, Duration: time.Second, Err: errors.New("gone")})
	a.Refused("127.0.0.1:1143", IMAP, netip.MustParseAddr("192.0.2.7"), Deny(ReasonRemoteClient, "192.0.2.7", "not allowed"))
	a.Refused("127.0.0.1:1143", IMAP, netip.MustParseAddr("192.0.2.7"), Deny(ReasonRemoteClient, "192.0.2.7", "not allowed"))
	a.Close()

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(seen) || len(lines) != 9 {
		t.Fatalf("%d lines, %d observed:\n%s", len(lines), len(seen), buf.String())
	}
	for i, l := range lines {
		e, err := ParseEvent([]byte(l))
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		o := seen[i]
		if e.Msg != o.Msg || e.Level != o.Level || !e.Time.Equal(o.Time) {
			t.Errorf("line %d: read %v %v %v, observed %v %v %v", i, e.Msg, e.Level, e.Time, o.Msg, o.Level, o.Time)
		}
		if !reflect.DeepEqual(e.Fields, o.Fields) {
			t.Errorf("line %d: read %v, observed %v", i, e.Fields, o.Fields)
		}
	}
	if last := seen[len(seen)-1]; last.Int("count") != 1 || last.Str("reason") != "remote_client" {
		t.Errorf("the interval's count: %v", last)
	}

	// Below the log's level: not written, still observed.
	buf.Reset()
	seen = nil
	quiet := NewAudit(&buf, slog.LevelError, func(e Event) { seen = append(seen, e) })
	quiet.Session("c2", POP3).Start("127.0.0.1:5001", "*")
	if buf.Len() != 0 || len(seen) != 1 || seen[0].Str("conn") != "c2" || seen[0].Str("client") != "127.0.0.1:5001" {
		t.Errorf("written %q, observed %v", buf.String(), seen)
	}
}

func TestParseEventRefusesJunk(t *testing.T) {
	for _, l := range []string{"", "{", `{"time":"x","msg":"a"}`, `{"level":"INFO"}`, `{"msg":"a","n":1.5}`} {
		if _, err := ParseEvent([]byte(l)); err == nil {
			t.Errorf("ParseEvent(%q) succeeded", l)
		}
	}
}

// TestSessionDenialsBounded: one connection writes at most
// maxSessionDenials refusals on their own; the rest (through any of its
// trails) are one event with their count at the session's end.
func TestSessionDenialsBounded(t *testing.T) {
	var buf bytes.Buffer
	a := NewAudit(&buf, slog.LevelInfo)
	s := a.Session("c1", POP3)
	s.Start("127.0.0.1:5000", "*")
	for i := range 1000 {
		trail := s
		if i%2 == 1 {
			trail = s.As(HTTPS)
		}
		trail.Denied(Deny(ReasonNonProviderHost, "evil.example", "USER a#evil.example %d", i))
	}
	s.End(SessionStats{})
	var denied []Event
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		e, err := ParseEvent([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if e.Msg == EventDenied {
			denied = append(denied, e)
		}
	}
	if len(denied) != maxSessionDenials+1 {
		t.Fatalf("%d policy.denied lines for 1000 refusals, want %d", len(denied), maxSessionDenials+1)
	}
	last := denied[len(denied)-1]
	if last.Int("count") != 1000-maxSessionDenials || !strings.Contains(last.Str("detail"), "999") {
		t.Fatalf("the closing event: %v", last.Fields)
	}
}

// TestFlushDenied: a trail with no session.end (a command's) writes the
// count of its refusals not written on their own when it is done.
func TestFlushDenied(t *testing.T) {
	var buf bytes.Buffer
	s := NewAudit(&buf, slog.LevelInfo).Session("authorize", HTTPS)
	for range maxSessionDenials + 3 {
		s.Denied(Deny(ReasonInput, "", "a forged redirect"))
	}
	s.FlushDenied()
	s.FlushDenied() // nothing more to write
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != maxSessionDenials+1 || !strings.Contains(lines[len(lines)-1], `"count":3`) {
		t.Fatalf("%d lines, the last %s", len(lines), lines[len(lines)-1])
	}
}
