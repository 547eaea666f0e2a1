package policy

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseEndpoint: whatever the string, ParseEndpoint does not panic;
// what it accepts is a known protocol on a non-zero port at a valid,
// normalised host, and its String() parses back to the same endpoint; a
// refused one never shows a password put before an "@" in it.
//
//	go test -run '^$' -fuzz '^FuzzParseEndpoint$' -fuzztime 60s ./policy/
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{
		"imaps://mail.example.com:993",
		"imap://Mail.Example.COM.",
		"pop3s://mail.example.com",
		"smtp://mail.example.com:587/",
		"smtps://[::1]:465",
		"imaps://[fe80::1%25eth0]:993",
		"imaps://127.0.0.1:01993",
		"imaps://user:pw@mail.example.com",
		"imaps://user@mail.example.com:99999",
		"pop3s://me@p%zzsecret@mail.example.com",
		"ftp://me@mail.example.com",
		"imaps://mail.example.com/x@y",
		"me@mail.example.com",
		"imaps://me@[fe80::1%25eth0]:993",
		"imaps://mail.example.com:0",
		"imaps://mail.example.com:65536",
		"imaps://mail.example.com?x",
		"imaps://mail.example.com#frag",
		"imaps:mail.example.com",
		"IMAPS://mail.example.com",
		"imaps://%6dail.example.com",
		"imaps://mail.example.com:+993",
		"imaps://[::ffff:192.0.2.1]",
		"imaps://" + strings.Repeat("a.", 127) + "a",
		"",
	} {
		f.Add(s)
	}
	const secret = "Fuzz-Secret-0x5eed"
	f.Fuzz(func(t *testing.T, raw string) {
		if i := strings.Index(raw, "@"); i >= 0 && !strings.Contains(raw, secret) {
			withSecret := raw[:i] + ":" + secret + raw[i:]
			if _, err := ParseEndpoint(withSecret); err == nil || strings.Contains(err.Error(), secret) {
				t.Fatalf("ParseEndpoint(%q): %v: a password must be refused and not shown", withSecret, err)
			}
		}
		e, err := ParseEndpoint(raw)
		if err != nil {
			if e != (Endpoint{}) {
				t.Fatalf("ParseEndpoint(%q) failed but returned %+v", raw, e)
			}
			return
		}
		if _, perr := ParseProto(string(e.Proto)); perr != nil || e.Port == 0 {
			t.Fatalf("ParseEndpoint(%q) = %+v", raw, e)
		}
		if !validHostName(e.Host) || NormalizeHost(e.Host) != e.Host {
			t.Fatalf("ParseEndpoint(%q) host %q is not a normalised host name", raw, e.Host)
		}
		s := e.String()
		back, err := ParseEndpoint(s)
		if err != nil || back != e {
			t.Fatalf("ParseEndpoint(%q) = %+v, String %q parses as %+v, %v", raw, e, s, back, err)
		}
		if want := e.Scheme() + "://" + e.Addr(); s != want || !strings.HasSuffix(s, ":"+strconv.Itoa(int(e.Port))) {
			t.Fatalf("Endpoint %+v prints as %q", e, s)
		}
	})
}
