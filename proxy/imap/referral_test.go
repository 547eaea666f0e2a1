package imap

import (
	"strings"
	"testing"
)

// TestReferralHost: the host an app would connect to when following a
// referral (RFC 5092 IMAP URL), as its URL parser reads the authority.
func TestReferralHost(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"imap://mail.example.com/", "mail.example.com"},
		{"IMAP://alice;AUTH=*@Mail.Example.com:993/INBOX", "mail.example.com"},
		{"imap://[2001:db8::1]:143/", "2001:db8::1"},
		{"imap://evil.example?@mail.provider", "evil.example"},
		{"imap://evil.example#@mail.provider/", "evil.example"},
		{"imap://user@evil.example/x@mail.provider", "evil.example"},
		{"http://mail.example.com/", ""},
	} {
		if got := referralHost(tc.url); got != tc.want {
			t.Errorf("referralHost(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}

// FuzzReferralHost: whatever a provider puts in a REFERRAL, the host
// audited is a bare host — never a path, query, fragment or user part —
// and it never panics.
//
//	go test -run '^$' -fuzz '^FuzzReferralHost$' -fuzztime 60s ./proxy/imap/
func FuzzReferralHost(f *testing.F) {
	for _, s := range []string{"imap://mail.example.com/", "imap://a@b?@c", "imap://[::1]:143/", "imap://[", "IMAP://x#y@z/", "imap://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		if h := referralHost(u); strings.ContainsAny(h, "/?#@") {
			t.Fatalf("referralHost(%q) = %q", u, h)
		}
	})
}
