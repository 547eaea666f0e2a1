package config

import (
	"strings"
	"testing"
)

// tofu is on unless a provider says tofu = false; a value that is not a
// boolean is an error naming the key.
func TestTOFUKey(t *testing.T) {
	doc := func(extra string) string {
		return `[[provider]]
name = "p"
hosts = ["mail.example.com"]
imap = "imaps://mail.example.com"
` + extra + `
[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
provider = "p"
`
	}
	for _, c := range []struct {
		extra string
		off   bool
	}{{"", false}, {"tofu = true", false}, {"tofu = false", true}} {
		cfg, err := Parse("test.toml", []byte(doc(c.extra)))
		if err != nil {
			t.Fatalf("%q: %v", c.extra, err)
		}
		if got := cfg.Provider("p").TLS.NoTOFU; got != c.off {
			t.Errorf("%q: NoTOFU = %v, want %v", c.extra, got, c.off)
		}
	}
	if _, err := Parse("test.toml", []byte(doc(`tofu = "no"`))); err == nil || !strings.Contains(err.Error(), "tofu") {
		t.Errorf(`tofu = "no": %v`, err)
	}
}
