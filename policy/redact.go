package policy

import "strings"

// RedactURL is raw, a URL as a user wrote it, for an error message: a user
// name and password in its authority ("socks5h://me:secret@127.0.0.1")
// become "…" (everything up to the last "@"). It works on the text, so
// that a URL that does not even parse is shown without its credentials too.
func RedactURL(raw string) string {
	// Up to the last "@" anywhere: a password may hold "/", "?", "#" or
	// "://", and these endpoints have no reason to hold an "@" elsewhere.
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	// The scheme is kept only when the text starts with one: the first
	// "://" may as well sit inside a password (":secret@://@").
	start := 0
	if i := strings.Index(raw[:at], "://"); i >= 0 && isScheme(raw[:i]) {
		start = i + 3
	}
	return raw[:start] + "…" + raw[at:]
}

// isScheme reports whether s is a URL scheme (RFC 3986 section 3.1:
// a letter, then letters, digits, "+", "-" and "."), or empty.
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}
