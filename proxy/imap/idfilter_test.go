package imap

import (
	"bytes"
	"strings"
	"testing"
)

func TestIDFilter(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"other commands pass", "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS)\r\n", "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS)\r\n"},
		{"ID replaced", `a3 ID ("name" "iPhone Mail" "os" "iOS" "os-version" "17.1")` + "\r\na4 NOOP\r\n", "a3 ID NIL\r\na4 NOOP\r\n"},
		{"lower case", `x id ("name" "Thunderbird")` + "\r\n", "x ID NIL\r\n"},
		{"ID with a literal field", "a5 ID (\"name\" {7}\r\nMy Mail \"host\" \"ALICE-PC\")\r\na6 NOOP\r\n", "a5 ID NIL\r\na6 NOOP\r\n"},
		{"ID inside a literal is data", "a7 APPEND INBOX {27}\r\na8 ID (\"name\" \"x\")\r\nbody\r\n a9 NOOP\r\n",
			"a7 APPEND INBOX {27}\r\na8 ID (\"name\" \"x\")\r\nbody\r\n a9 NOOP\r\n"},
		{"non-synchronising literal", "b1 APPEND INBOX {5+}\r\nhello\r\nb2 ID NIL\r\n", "b1 APPEND INBOX {5+}\r\nhello\r\nb2 ID NIL\r\n"},
		{"literal8", "b3 APPEND INBOX ~{3}\r\nabc\r\n", "b3 APPEND INBOX ~{3}\r\nabc\r\n"},
		{"IDLE and DONE", "c1 IDLE\r\nDONE\r\n", "c1 IDLE\r\nDONE\r\n"},
		{"IDs that are not the command", "c2 SEARCH HEADER Message-ID x\r\nc3 UID FETCH 1 (FLAGS)\r\n", "c2 SEARCH HEADER Message-ID x\r\nc3 UID FETCH 1 (FLAGS)\r\n"},
		{"after COMPRESS nothing is touched", "d1 COMPRESS DEFLATE\r\n\x78\x9c d2 ID (\"name\" \"x\")\r\n", "d1 COMPRESS DEFLATE\r\n\x78\x9c d2 ID (\"name\" \"x\")\r\n"},
		{"long line", "e1 SEARCH " + strings.Repeat("OR X Y ", 100) + "\r\ne2 ID (\"a\" \"b\")\r\n", "e1 SEARCH " + strings.Repeat("OR X Y ", 100) + "\r\ne2 ID NIL\r\n"},
	}
	for _, c := range cases {
		// Every way of cutting the stream in two, and byte by byte.
		for cut := 0; cut <= len(c.in); cut++ {
			var out bytes.Buffer
			f := newIDFilter(&out)
			f.Write([]byte(c.in[:cut]))
			f.Write([]byte(c.in[cut:]))
			if out.String() != c.want {
				t.Fatalf("%s, cut at %d:\n got %q\nwant %q", c.name, cut, out.String(), c.want)
			}
		}
		var out bytes.Buffer
		f := newIDFilter(&out)
		for i := 0; i < len(c.in); i++ {
			f.Write([]byte{c.in[i]})
		}
		if out.String() != c.want {
			t.Errorf("%s, byte by byte:\n got %q\nwant %q", c.name, out.String(), c.want)
		}
	}
}
