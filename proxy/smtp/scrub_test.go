package smtp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var defaultScrub = []string{"User-Agent", "X-Mailer"}

// scrubAll writes msg through a scrubber in pieces cut at cuts.
func scrubAll(t testing.TB, msg string, names []string, limit int, cuts ...int) (string, int, error) {
	var out bytes.Buffer
	s := newScrubber(&out, names, limit)
	last := 0
	for _, c := range append(cuts, len(msg)) {
		if c < last || c > len(msg) {
			continue
		}
		n, err := s.Write([]byte(msg[last:c]))
		if err != nil {
			return out.String(), s.Removed(), err
		}
		if n != c-last {
			t.Fatalf("short write %d of %d without an error", n, c-last)
		}
		last = c
	}
	err := s.Close()
	return out.String(), s.Removed(), err
}

const pgpMessage = "From: a@example.test\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0)\r\n" +
	"  Gecko/20100101 Thunderbird/128.3.0\r\n" +
	"To: b@example.test\r\n" +
	"x-mailer: Foo Mail 1.2\r\n" +
	"X-Mailer-Foo: stays\r\n" +
	"X-Mailer : obsolete form, removed\r\n" +
	"\tstill the same field\r\n" +
	"Subject: signed\r\n" +
	"Content-Type: multipart/signed; boundary=\"b\"; protocol=\"application/pgp-signature\"\r\n" +
	"\r\n" +
	"--b\r\n" +
	"Content-Type: text/plain\r\n" +
	"X-Mailer: part header, stays\r\n" +
	"\r\n" +
	"User-Agent: body text, stays\r\n" +
	"--b--\r\n"

const pgpWant = "From: a@example.test\r\n" +
	"To: b@example.test\r\n" +
	"X-Mailer-Foo: stays\r\n" +
	"Subject: signed\r\n" +
	"Content-Type: multipart/signed; boundary=\"b\"; protocol=\"application/pgp-signature\"\r\n" +
	"\r\n" +
	"--b\r\n" +
	"Content-Type: text/plain\r\n" +
	"X-Mailer: part header, stays\r\n" +
	"\r\n" +
	"User-Agent: body text, stays\r\n" +
	"--b--\r\n"

func TestScrubber(t *testing.T) {
	lf := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
	cases := []struct {
		name, in, want string
		names          []string
		removed        int
	}{
		{"pgp/mime", pgpMessage, pgpWant, defaultScrub, 3},
		{"bare LF", lf(pgpMessage), lf(pgpWant), defaultScrub, 3},
		{"off", pgpMessage, pgpMessage, nil, 0},
		{"other names", "X-Originating-IP: [192.0.2.1]\r\nSubject: s\r\n\r\nbody\r\n", "Subject: s\r\n\r\nbody\r\n", []string{"X-Originating-IP"}, 1},
		{"no body, no blank line", "Subject: s\r\nX-Mailer: m\r\n", "Subject: s\r\n", defaultScrub, 1},
		{"no body, last line without end", "Subject: s\r\nX-Mailer: m", "Subject: s\r\n", defaultScrub, 1},
		{"last folded line without end", "X-Mailer: m\r\n more", "", defaultScrub, 1},
		{"headers only then blank", "X-Mailer: m\r\n\r\n", "\r\n", defaultScrub, 1},
		{"empty message", "", "", defaultScrub, 0},
		{"no headers", "\r\nX-Mailer: body\r\n", "\r\nX-Mailer: body\r\n", defaultScrub, 0},
		{"a non-field line starts the body", "Subject: s\r\nnot a header\r\nX-Mailer: body now\r\n", "Subject: s\r\nnot a header\r\nX-Mailer: body now\r\n", defaultScrub, 0},
		{"space in a name is no field", "X Mailer: x\r\nX-Mailer: y\r\n", "X Mailer: x\r\nX-Mailer: y\r\n", defaultScrub, 0},
		{"continuation of a kept field", "Subject: a\r\n b\r\nX-Mailer: m\r\n c\r\nTo: t\r\n\r\n", "Subject: a\r\n b\r\nTo: t\r\n\r\n", defaultScrub, 1},
		{"two in a row", "User-Agent: u\r\nX-Mailer: m\r\n\r\nb", "\r\nb", defaultScrub, 2},
		{"a first line folded starts the body", " x\r\nX-Mailer: y\r\n\r\nz", " x\r\nX-Mailer: y\r\n\r\nz", defaultScrub, 0},
		{"a first line folded with tab, bare LF", "\tx\nUser-Agent: y\n", "\tx\nUser-Agent: y\n", defaultScrub, 0},
		{"a first line folded, no line end", " X-Mailer: y", " X-Mailer: y", defaultScrub, 0},
		{"CR inside a line", "X-Mailer: a\rb\r\nSubject: s\r\n\r\n", "Subject: s\r\n\r\n", defaultScrub, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Whole, then cut at every byte position, then one byte a write.
			var splits [][]int
			splits = append(splits, nil)
			for i := 0; i <= len(c.in); i++ {
				splits = append(splits, []int{i})
			}
			every := make([]int, len(c.in))
			for i := range every {
				every[i] = i
			}
			splits = append(splits, every)
			for _, cuts := range splits {
				got, removed, err := scrubAll(t, c.in, c.names, 1<<20, cuts...)
				if err != nil || got != c.want || removed != c.removed {
					t.Fatalf("cuts %v: got %q, %d removed, %v\nwant %q, %d removed", cuts, got, removed, err, c.want, c.removed)
				}
			}
		})
	}
}

// A header block over the limit is refused and nothing of it is written.
func TestScrubberLimit(t *testing.T) {
	block := "Subject: s\r\n" + strings.Repeat("X-Long: "+strings.Repeat("a", 60)+"\r\n", 100)
	msg := block + "\r\nbody\r\n"
	for _, cut := range []int{0, 1, 100, len(block) - 1, len(block)} {
		out, _, err := scrubAll(t, msg, defaultScrub, len(block)-1, cut)
		if !errors.Is(err, errHeaderTooLarge) || out != "" {
			t.Fatalf("cut %d: %q, %v; want nothing written and errHeaderTooLarge", cut, out, err)
		}
	}
	// The limit counts the header block (with the blank line), not the body.
	out, _, err := scrubAll(t, msg+strings.Repeat("b", 10000), defaultScrub, len(block)+2)
	if err != nil || !strings.HasPrefix(out, block) {
		t.Fatalf("exactly at the limit: %v", err)
	}
	// A message with no blank line counts whole.
	_, _, err = scrubAll(t, block, defaultScrub, len(block)-1)
	if !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("no body over the limit: %v", err)
	}
}

// A failing writer underneath is reported, and sticks.
func TestScrubberWriteError(t *testing.T) {
	boom := errors.New("boom")
	s := newScrubber(failWriter{boom}, defaultScrub, 1<<10)
	if _, err := s.Write([]byte("Subject: x\r\n")); err != nil {
		t.Fatal("wrote before the header block ended")
	}
	if _, err := s.Write([]byte("\r\nbody")); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if _, err := s.Write([]byte("more")); !errors.Is(err, boom) {
		t.Fatalf("not sticky: %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func BenchmarkScrubberBody(b *testing.B) {
	msg := []byte(pgpMessage + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 13000)) // about 1 MiB
	chunk := 32 << 10
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		s := newScrubber(discard{}, defaultScrub, 256<<10)
		for i := 0; i < len(msg); i += chunk {
			s.Write(msg[i:min(i+chunk, len(msg))])
		}
		s.Close()
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestScrubberOff: with no names (scrub_headers = []) nothing is held:
// a header block of any size passes unchanged and is never refused.
func TestScrubberOff(t *testing.T) {
	msg := "X-Mailer: app 1.0\r\n" + strings.Repeat("X-Long: "+strings.Repeat("y", 990)+"\r\n", 300) + "\r\nbody\r\n"
	var out bytes.Buffer
	s := newScrubber(&out, nil, 1024)
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != msg || s.Removed() != 0 {
		t.Errorf("the message changed (%d removed)", s.Removed())
	}
}
