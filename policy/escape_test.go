package policy

import "testing"

// TestEscape: a user name in the audit log says exactly what the app sent,
// on one line, whatever bytes it holds.
func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice@example.com", "alice@example.com"},
		{"al\x00ice", `al\x00ice`},
		{"a\r\nb", `a\r\nb`},
		{`back\slash`, `back\\slash`},
		{"quote\"d", `quote"d`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"naïve", "naïve"},
		{"\uFFFD", "\uFFFD"},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
