package policy

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEscape: a user name written to the audit log says exactly what the
// app sent, on one line. For any string, Escape returns valid UTF-8 in
// which every rune is graphic (nothing that could end or rewrite a line:
// no C0 or C1 control, no line separator, no bidirectional override), it
// returns a clean name unchanged, and an escaped one reads back as the
// original with Go's quoting rules.
//
//	go test -run '^$' -fuzz '^FuzzEscape$' -fuzztime 60s ./policy/
func FuzzEscape(f *testing.F) {
	for _, s := range []string{
		"alice@example.com",
		"al\x00ice",
		"a\r\nb",
		`back\slash`,
		"quote\"d",
		"bad\xffutf8",
		"naïve",
		"\uFFFD",
		"next\u0085line",
		"sep\u2028arator",
		"evil\u202egnp.exe",
		"\x1b[31mred",
		"tab\there",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		if !utf8.ValidString(out) {
			t.Fatalf("Escape(%q) = %q is not UTF-8", s, out)
		}
		for _, r := range out {
			if !strconv.IsGraphic(r) {
				t.Fatalf("Escape(%q) = %q holds %U", s, out, r)
			}
		}
		if out == s {
			if strings.ContainsRune(s, '\\') {
				t.Fatalf("Escape(%q) left a backslash unescaped", s)
			}
			return
		}
		back, err := strconv.Unquote(`"` + strings.ReplaceAll(out, `"`, `\"`) + `"`)
		if err != nil || back != s {
			t.Fatalf("Escape(%q) = %q reads back as %q, %v", s, out, back, err)
		}
	})
}
