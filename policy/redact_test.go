package policy

import (
	"strings"
	"testing"
)

// TestRedactURL: credentials in a URL never reach a message, whether or
// not the URL parses; everything else is shown as written.
func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"socks5h://127.0.0.1:9050":              "socks5h://127.0.0.1:9050",
		"socks5h://me:s3cret@127.0.0.1:9050":    "socks5h://…@127.0.0.1:9050",
		"socks5h://me:pa/ss?#x@127.0.0.1:9050":  "socks5h://…@127.0.0.1:9050",
		"https://id:s3cret@login.example/token": "https://…@login.example/token",
		"me:s3cret@[bad":                        "…@[bad",
		"https://login.example/token":           "https://login.example/token",
		":s3cret@://@":                          "…@",
		"https://me:pa://ss@host":               "https://…@host",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

// TestURLErrorsHideCredentials: every refusal of a via or OAuth2 URL that
// carries credentials, however malformed the rest, leaves them out.
func TestURLErrorsHideCredentials(t *testing.T) {
	p := &Provider{Name: "example", Hosts: []string{"login.example.com"}}
	for _, rest := range []string{"127.0.0.1:9050", "[bad", "127.0.0.1:9050/x", "localhost", "login.example.com/token", "evil.example/t", "host:0"} {
		for _, scheme := range []string{"socks5h://", "socks5://", "ftp://", "https://", ""} {
			raw := scheme + "me:TopSecret/?#@" + rest
			if _, err := ParseVia(raw); err != nil && strings.Contains(err.Error(), "TopSecret") {
				t.Errorf("ParseVia(%q): %v", raw, err)
			}
			if _, err := p.OAuth2Endpoint(raw); err != nil && strings.Contains(err.Error(), "TopSecret") {
				t.Errorf("OAuth2Endpoint(%q): %v", raw, err)
			}
		}
	}
}
