package imap

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// A line an app could take for a REFERRAL: "*", a status word, then a
// "[REFERRAL" code, with any spaces.
var referralLine = regexp.MustCompile(`(?i)^\* *\S+ +\[ *referral( |]|$)`)

// FuzzLoginReplyFilter frames arbitrary provider bytes as response() does
// and filters them as the login reply's untagged part. What reaches the
// app is whole CRLF lines, none with a bare CR, none ending in a literal
// (whose bytes an app could frame otherwise), none carrying a REFERRAL
// code. (That a refused REFERRAL is audited is TestLoginReplyFilter's.)
//
//	go test -run '^$' -fuzz '^FuzzLoginReplyFilter$' -fuzztime 60s ./proxy/imap/
func FuzzLoginReplyFilter(f *testing.F) {
	for _, s := range []string{
		"* OK [REFERRAL imap://evil.test/] x\r\n",
		"* XFOO {1}\r\nx\r\n* NO [REFERRAL imap://evil.test/] go\r\n",
		"*  BYE   [ referral imap://evil.test/]\r\n",
		"* OK {36}\r\n* NO [REFERRAL imap://evil7.test/]\r\n\r\n",
		"* CAPABILITY IMAP4rev1 ID IDLE\r\n* PREAUTH [REFERRAL imap://localhost/] ok\r\n",
		"* OK a\rb\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		audit := policy.NewAudit(io.Discard, slog.LevelInfo).Session("fuzz", policy.IMAP)
		fs := &session{s: &proxy.Session{Audit: audit}}
		u := &upstream{
			br:    bufio.NewReaderSize(bytes.NewReader(input), 4096),
			route: policy.Route{Provider: &policy.Provider{Name: "example", Hosts: []string{"localhost"}}},
		}
		var raw []byte
		for range 100 {
			_, r, err := u.response()
			if err != nil {
				break
			}
			raw = append(raw, r...)
		}
		out := fs.filterUntagged(u, raw)
		if out != "" && !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("output %q does not end in CRLF", out)
		}
		for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("line %q holds a bare CR or LF", l)
			}
			if _, lit := trailingLiteral(l); lit {
				t.Fatalf("line %q ends in a literal", l)
			}
			if referralLine.MatchString(l) {
				t.Fatalf("line %q carries a REFERRAL", l)
			}
		}
	})
}
