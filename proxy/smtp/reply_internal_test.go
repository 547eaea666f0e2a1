package smtp

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// TestReplyConn: the bound is per reply (it starts again at each Write),
// a line over maxReplyLine trips it as well, and the refusal is reported
// once.
func TestReplyConn(t *testing.T) {
	line := strings.Repeat("y", 98) + "\r\n" // 100 bytes
	for _, tc := range []struct {
		name  string
		reply string
		ok    bool
	}{
		{"within", strings.Repeat(line, maxReply/100), true},
		{"over", strings.Repeat(line, maxReply/100+1), false},
		{"long line", strings.Repeat("z", maxReplyLine-1) + "\r\n", true}, // CR counts
		{"line over", strings.Repeat("z", maxReplyLine) + "\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			overs := 0
			r := newReplyConn(a, func() { overs++ })
			// Three commands, each answered by the reply.
			go func() {
				buf := make([]byte, 16)
				for range 3 {
					if _, err := io.ReadFull(b, buf[:4]); err != nil {
						return
					}
					if _, err := io.WriteString(b, tc.reply); err != nil {
						return
					}
				}
			}()
			for i := range 3 {
				if _, err := r.Write([]byte("CMD\n")); err != nil {
					t.Fatal(err)
				}
				_, err := io.ReadFull(r, make([]byte, len(tc.reply)))
				if tc.ok && err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if !tc.ok {
					if !errors.Is(err, errReplyTooLong) {
						t.Fatalf("reply %d: %v, want errReplyTooLong", i, err)
					}
					if _, err := r.Read(make([]byte, 1)); !errors.Is(err, errReplyTooLong) {
						t.Fatalf("a read after the refusal: %v", err)
					}
					break
				}
			}
			if want := map[bool]int{true: 0, false: 1}[tc.ok]; overs != want {
				t.Errorf("refusal reported %d times, want %d", overs, want)
			}
		})
	}
}

// TestClipText: the provider's text is printable and bounded, its lines
// kept apart.
func TestClipText(t *testing.T) {
	got := clipText("ok\x1b[2J\n" + strings.Repeat("w", 5000) + strings.Repeat("\nl", 100))
	lines := strings.Split(got, "\n")
	if len(lines) != maxReplyLines || lines[0] != "ok?[2J" || len(lines[1]) != maxReplyLineText+3 || lines[maxReplyLines-1] != "..." {
		t.Errorf("clipped to %d lines: %q", len(lines), got)
	}
}
