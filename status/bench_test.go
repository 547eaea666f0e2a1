package status

import (
	"crypto/tls"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"mailproxy/policy"
)

// BenchmarkSessionEvents writes the events of one ordinary session
// (start, connect, handshake, auth, end) to an audit log, without and with
// the status collector observing them: what counting costs a session.
// Nothing here is on the relay's data path, which only adds to two
// atomic counters per read and write, as before.
//
//	go test -run '^$' -bench SessionEvents -benchmem ./status/
func BenchmarkSessionEvents(b *testing.B) {
	for _, observed := range []bool{false, true} {
		b.Run("observed="+strconv.FormatBool(observed), func(b *testing.B) {
			var a *policy.Audit
			if observed {
				a = policy.NewAudit(io.Discard, slog.LevelInfo, NewCollector().Observe)
			} else {
				a = policy.NewAudit(io.Discard, slog.LevelInfo)
			}
			facts := policy.TLSFacts{Provider: "example", Host: "mail.example.com", Version: tls.VersionTLS13,
				CipherSuite: tls.TLS_AES_128_GCM_SHA256, Group: tls.X25519MLKEM768, Verified: true, NotAfter: time.Now()}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				s := a.Session(strconv.Itoa(i), policy.IMAP)
				s.Start("127.0.0.1:50000", "example")
				s.UpstreamConnect("mail.example.com", "192.0.2.1:993")
				s.UpstreamTLS(facts)
				s.Auth("alice", true)
				s.End(policy.SessionStats{BytesUp: 100, BytesDown: 10000, Duration: time.Second})
			}
		})
	}
}
