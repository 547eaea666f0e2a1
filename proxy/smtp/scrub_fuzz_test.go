package smtp

import (
	"bytes"
	"testing"
)

// FuzzScrubber checks the header scrubber against a whole-message model:
// however the message is cut into writes, the output is the same; the
// body (everything from the line that ends the header block) comes out
// byte for byte; and the header block comes out as the input's lines less
// exactly the listed fields and their continuation lines.
func FuzzScrubber(f *testing.F) {
	f.Add([]byte(pgpMessage), uint16(7), uint16(80))
	f.Add([]byte("X-Mailer: a\n b\nSubject: c\n\nbody"), uint16(1), uint16(12))
	f.Add([]byte("user-agent :x\r\n\tfold\r\nnot a field\r\nX-Mailer: y\r\n"), uint16(3), uint16(3))
	f.Add([]byte("Subject: s\r\nX-Mailer: m"), uint16(0), uint16(20))
	f.Add([]byte(" x\r\nX-Mailer: y\r\n\r\nz"), uint16(1), uint16(4))
	f.Fuzz(func(t *testing.T, msg []byte, c1, c2 uint16) {
		whole, removed, err := scrubAll(t, string(msg), defaultScrub, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		a, b := int(c1)%(len(msg)+1), int(c2)%(len(msg)+1)
		if a > b {
			a, b = b, a
		}
		cut, removed2, err := scrubAll(t, string(msg), defaultScrub, 1<<20, a, b)
		if err != nil || cut != whole || removed2 != removed {
			t.Fatalf("cut at %d,%d: %q (%d), whole: %q (%d)", a, b, cut, removed2, whole, removed)
		}

		// The model: split into lines, find the header block's end.
		lines := bytes.SplitAfter(msg, []byte("\n"))
		var kept []byte
		var body []byte
		wantRemoved := 0
		drop, field := false, false
		for i, l := range lines {
			if len(l) == 0 {
				continue
			}
			blank := bytes.Equal(l, []byte("\n")) || bytes.Equal(l, []byte("\r\n"))
			name, isField := fieldName(l)
			wsp := l[0] == ' ' || l[0] == '\t'
			if blank || (!wsp && !isField) || (wsp && !field) {
				body = bytes.Join(lines[i:], nil)
				break
			}
			if l[0] == ' ' || l[0] == '\t' {
				if !drop {
					kept = append(kept, l...)
				}
				continue
			}
			field = true
			drop = bytes.EqualFold(name, []byte("User-Agent")) || bytes.EqualFold(name, []byte("X-Mailer"))
			if drop {
				wantRemoved++
			} else {
				kept = append(kept, l...)
			}
		}
		if want := string(kept) + string(body); whole != want || removed != wantRemoved {
			t.Fatalf("got %q (%d removed), model %q (%d removed)", whole, removed, want, wantRemoved)
		}
		if !bytes.HasSuffix([]byte(whole), body) {
			t.Fatal("the body changed")
		}
	})
}
