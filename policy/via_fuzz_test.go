package policy

import (
	"strings"
	"testing"
)

// FuzzParseVia: a proxy URL that parses names an IP address and a port,
// comes back the same from its String (which never holds credentials),
// and anything else is refused without a value.
func FuzzParseVia(f *testing.F) {
	for _, s := range []string{
		"socks5h://127.0.0.1:9050", "socks5://[::1]:1080", "socks5h://localhost:9150",
		"socks5h://u:p@127.0.0.1:9050", "socks5h://127.0.0.1", "socks5h://127.0.0.1:0",
		"socks5h://proxy.example:9050", "socks5h://[fe80::1%25eth0]:9050", "http://127.0.0.1:8080",
		"socks5h://127.0.0.1:9050/x", "socks5h://[::ffff:127.0.0.1]:9050", "socks5h:127.0.0.1:9050", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		// Credentials in the URL never reach the message, whatever
		// surrounds them.
		if i := strings.Index(raw, "@"); i >= 0 {
			withSecret := raw[:i] + ":Fuzz-Secret-0x5eed" + raw[i:]
			if _, err := ParseVia(withSecret); err != nil && strings.Contains(err.Error(), "Fuzz-Secret-0x5eed") {
				t.Fatalf("ParseVia(%q): the error shows the password: %v", withSecret, err)
			}
		}
		v, err := ParseVia(raw)
		if err != nil {
			if v != nil {
				t.Fatalf("ParseVia(%q) failed but returned %+v", raw, v)
			}
			return
		}
		if !v.Addr.IsValid() || v.Addr.Port() == 0 || v.Addr.Addr().Zone() != "" || v.Addr.Addr().Is4In6() {
			t.Fatalf("ParseVia(%q) = %v", raw, v.Addr)
		}
		if v.User != "" || v.Password != "" {
			t.Fatalf("ParseVia(%q) took credentials from the URL", raw)
		}
		again, err := ParseVia(v.String())
		if err != nil || *again != *v {
			t.Fatalf("ParseVia(%q) = %v, but its String %q gives %v, %v", raw, v, v.String(), again, err)
		}
	})
}
