package imap

import "testing"

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
