package status

import "testing"

// TestSameAddress: a reload that names the page's address again keeps it
// (binding it twice fails), including a wildcard, which Linux binds as a
// dual-stack [::]:P; port 0 always asks for a new one.
func TestSameAddress(t *testing.T) {
	for _, c := range []struct {
		configured, bound string
		same              bool
	}{
		{"127.0.0.1:1180", "127.0.0.1:1180", true},
		{"0.0.0.0:1180", "[::]:1180", true},
		{"[::]:1180", "0.0.0.0:1180", true},
		{"[::1]:1180", "[::1]:1180", true},
		{"127.0.0.1:1180", "127.0.0.1:1181", false},
		{"127.0.0.2:1180", "127.0.0.1:1180", false},
		{"0.0.0.0:1180", "127.0.0.1:1180", false},
		{"127.0.0.1:0", "127.0.0.1:40000", false},
		{"localhost:1180", "127.0.0.1:1180", false},
	} {
		if got := sameAddress(c.configured, c.bound); got != c.same {
			t.Errorf("sameAddress(%q, %q) = %v", c.configured, c.bound, got)
		}
	}
}
