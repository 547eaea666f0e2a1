package policy

import (
	"strings"
	"testing"
)

// FuzzOAuth2Endpoint: an accepted URL is an https endpoint on an allowed
// host with a port; a refused one never shows a password put before an
// "@" in it.
func FuzzOAuth2Endpoint(f *testing.F) {
	for _, s := range []string{
		"https://login.example.com/token", "https://login.example.com:8443/t?x=1", "http://login.example.com/token",
		"https://u:p@login.example.com/token", "https://evil.example/token", "https://login.example.com:0/",
		"https://[::1]/", "https://login.example.com#frag", "", "https://LOGIN.example.com./t",
	} {
		f.Add(s)
	}
	p := &Provider{Name: "example", Hosts: []string{"login.example.com", "*.example.com"}}
	f.Fuzz(func(t *testing.T, raw string) {
		if i := strings.Index(raw, "@"); i >= 0 {
			withSecret := raw[:i] + ":Fuzz-Secret-0x5eed" + raw[i:]
			if _, err := p.OAuth2Endpoint(withSecret); err != nil && strings.Contains(err.Error(), "Fuzz-Secret-0x5eed") {
				t.Fatalf("OAuth2Endpoint(%q): the error shows the password: %v", withSecret, err)
			}
		}
		ep, err := p.OAuth2Endpoint(raw)
		if err != nil {
			return
		}
		if ep.Proto != HTTPS || ep.Security != ImplicitTLS || ep.Port == 0 || !p.Allows(ep.Host) {
			t.Fatalf("OAuth2Endpoint(%q) = %+v", raw, ep)
		}
	})
}
