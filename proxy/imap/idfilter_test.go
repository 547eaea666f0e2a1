package imap

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

func TestIDFilter(t *testing.T) {
	longTag := strings.Repeat("t", 3*headMaxOld)
	cases := []struct {
		name, in, want string
	}{
		{"other commands pass", "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS)\r\n", "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS)\r\n"},
		{"ID replaced", `a3 ID ("name" "iPhone Mail" "os" "iOS" "os-version" "17.1")` + "\r\na4 NOOP\r\n", "a3 ID NIL\r\na4 NOOP\r\n"},
		{"lower case", `x id ("name" "Thunderbird")` + "\r\n", "x ID NIL\r\n"},
		{"ID inside a literal is data", "a7 APPEND INBOX {27}\r\na8 ID (\"name\" \"x\")\r\nbody\r\n a9 NOOP\r\n",
			"a7 APPEND INBOX {27}\r\na8 ID (\"name\" \"x\")\r\nbody\r\n a9 NOOP\r\n"},
		{"non-synchronising literal", "b1 APPEND INBOX {5+}\r\nhello\r\nb2 ID NIL\r\n", "b1 APPEND INBOX {5+}\r\nhello\r\nb2 ID NIL\r\n"},
		{"literal8", "b3 APPEND INBOX ~{3}\r\nabc\r\n", "b3 APPEND INBOX ~{3}\r\nabc\r\n"},
		{"IDLE and DONE", "c1 IDLE\r\nDONE\r\n", "c1 IDLE\r\nDONE\r\n"},
		{"IDs that are not the command", "c2 SEARCH HEADER Message-ID x\r\nc3 UID FETCH 1 (FLAGS)\r\nc4 IDX (\"a\" \"b\")\r\n",
			"c2 SEARCH HEADER Message-ID x\r\nc3 UID FETCH 1 (FLAGS)\r\nc4 IDX (\"a\" \"b\")\r\n"},
		// COMPRESS is made one the provider refuses: the stream stays
		// readable, and a later ID is still replaced.
		{"COMPRESS refused, ID still filtered", "d1 COMPRESS DEFLATE\r\nd2 ID (\"name\" \"x\")\r\n", "d1 COMPRESS X-MAILPROXY-NONE\r\nd2 ID NIL\r\n"},
		{"compress, lower case", "d5 compress deflate\n", "d5 COMPRESS X-MAILPROXY-NONE\r\n"},
		{"COMPRESS with a literal", "d6 COMPRESS {7}\r\nDEFLATE\r\nd7 NOOP\r\n", "d6 COMPRESS X-MAILPROXY-NONE {0}\r\n\r\nd7 NOOP\r\n"},
		{"a longer name is not COMPRESS", "d3 COMPRESSX\r\nd4 ID (\"name\" \"x\")\r\n", "d3 COMPRESSX\r\nd4 ID NIL\r\n"},
		{"long line", "e1 SEARCH " + strings.Repeat("OR X Y ", 100) + "\r\ne2 ID (\"a\" \"b\")\r\n", "e1 SEARCH " + strings.Repeat("OR X Y ", 100) + "\r\ne2 ID NIL\r\n"},
		{"long tag", longTag + " ID (\"name\" \"x\")\r\n" + longTag + " NOOP\r\n", longTag + " ID NIL\r\n" + longTag + " NOOP\r\n"},
		{"ID without arguments", "e3 ID\r\ne4 ID\n", "e3 ID NIL\r\ne4 ID NIL\r\n"},
		{"no tag, no command", " ID (\"name\" \"x\")\r\n", " ID (\"name\" \"x\")\r\n"},

		// A synchronizing literal waits for the provider's "+": it gets
		// one for an empty literal of its own, in a field named for it.
		{"ID with a literal field", "a5 ID (\"name\" {7}\r\nMy Mail \"host\" \"ALICE-PC\")\r\na6 NOOP\r\n",
			"a5 ID (\"x1\" {0}\r\n)\r\na6 NOOP\r\n"},
		{"ID with several literals", "f1 ID ({4}\r\nname {7}\r\nMy Mail \"os\" {3}\r\niOS)\r\nf2 NOOP\r\n",
			"f1 ID (\"x1\" {0}\r\n \"x2\" {0}\r\n \"x3\" {0}\r\n)\r\nf2 NOOP\r\n"},
		{"non-synchronizing literals need no +", "f3 ID (\"name\" {7+}\r\nMy Mail \"os\" {3-}\r\niOS)\r\n", "f3 ID NIL\r\n"},
		{"mixed literals", "f4 ID ({4+}\r\nname {7}\r\nMy Mail {2-}\r\nos ~{3}\r\niOS)\r\nf5 NOOP\r\n",
			"f4 ID (\"x1\" {0}\r\n \"x2\" {0}\r\n)\r\nf5 NOOP\r\n"},
		{"empty literal", "f6 ID (\"name\" {0}\r\n)\r\n", "f6 ID (\"x1\" {0}\r\n)\r\n"},
		{"bare LF", "f7 ID (\"name\" {4}\nMail)\nf8 NOOP\n", "f7 ID (\"x1\" {0}\r\n)\r\nf8 NOOP\n"},
		{"length with leading zeros", "f9 ID (\"name\" {" + strings.Repeat("0", 80) + "4}\r\nMail)\r\n", "f9 ID (\"x1\" {0}\r\n)\r\n"},

		// What is not a literal header ends the command with its line.
		{"malformed literal", "g1 ID (\"name\" {4\r\nMail)\r\ng2 ID (\"a\" {}\r\ng3 ID (\"a\" {+4}\r\ng4 ID (\"a\" {4++}\r\ng5 ID (\"a\" {4}\r\r\n",
			"g1 ID NIL\r\nMail)\r\ng2 ID NIL\r\ng3 ID NIL\r\ng4 ID NIL\r\ng5 ID NIL\r\n"},
		{"length beyond int64", "g6 ID (\"name\" {9223372036854775808}\r\ng7 ID (\"a\" \"b\")\r\n", "g6 ID NIL\r\ng7 ID NIL\r\n"},
		{"largest length", "g8 ID (\"name\" {9223372036854775807}\r\ng9 ID (\"a\" \"b\")\r\n", "g8 ID (\"x1\" {0}\r\n"},
		{"literal header on a line without a command", "{4}\r\ng10 ID (\"a\" \"b\")\r\n", "{4}\r\ng10 ID NIL\r\n"},
	}
	for _, c := range cases {
		// Every way of cutting the stream in two, and byte by byte.
		for cut := 0; cut <= len(c.in); cut++ {
			if got := filterChunks(c.in[:cut], c.in[cut:]); got != c.want {
				t.Fatalf("%s, cut at %d:\n got %q\nwant %q", c.name, cut, got, c.want)
			}
		}
		if got := filterChunks(strings.Split(c.in, "")...); got != c.want {
			t.Errorf("%s, byte by byte:\n got %q\nwant %q", c.name, got, c.want)
		}
		// And in three, where that stays quick.
		if len(c.in) > 200 {
			continue
		}
		for i := 0; i <= len(c.in); i++ {
			for j := i; j <= len(c.in); j++ {
				if got := filterChunks(c.in[:i], c.in[i:j], c.in[j:]); got != c.want {
					t.Fatalf("%s, cut at %d and %d:\n got %q\nwant %q", c.name, i, j, got, c.want)
				}
			}
		}
	}
}

// headMaxOld is what the filter once held back of a line to decide it: a
// tag longer than that must still be found.
const headMaxOld = 128

// filterChunks gives what the provider gets from the app writing chunks.
func filterChunks(chunks ...string) string {
	var out bytes.Buffer
	f := newIDFilter(&out)
	for _, c := range chunks {
		if n, err := f.Write([]byte(c)); n != len(c) || err != nil {
			panic(fmt.Sprintf("Write: %d of %d, %v", n, len(c), err))
		}
	}
	return out.String()
}

// One "+" for each synchronizing literal: k of them in an ID command,
// among non-synchronizing ones, are k empty literals at the provider.
func TestIDFilterOnePlusPerLiteral(t *testing.T) {
	for k := 0; k <= 12; k++ {
		in := "h1 ID ("
		want := "h1 ID NIL\r\n"
		if k > 0 {
			want = "h1 ID (\"x1\" {0}\r\n"
		}
		for i := 1; i <= k; i++ {
			in += "{3+}\r\nkey {5}\r\nvalue "
			if i > 1 {
				want += " \"x" + strconv.Itoa(i) + "\" {0}\r\n"
			}
		}
		in += "\"last\")\r\nh2 NOOP\r\n"
		if k > 0 {
			want += ")\r\n"
		}
		want += "h2 NOOP\r\n"
		got := filterChunks(in)
		if got != want {
			t.Fatalf("%d literals:\n got %q\nwant %q", k, got, want)
		}
		if n := strings.Count(got, "{0}\r\n"); n != k {
			t.Errorf("%d synchronizing literals, %d empty literals at the provider", k, n)
		}
	}
}

// An app that waits for "+" before each literal, as it must, against a
// provider that answers as Dovecot does: the ID command completes, and
// the provider sees none of its fields.
func TestIDFilterAppWaitsForPlus(t *testing.T) {
	steps := []struct{ app, reply string }{
		{"i1 ID (\"name\" {4}\r\n", "+"},
		{"Mail \"os\" {3}\r\n", "+"},
		{"iOS \"version\" ~{2}\r\n", "+"},
		{"17)\r\n", "i1 OK"},
		{"i2 APPEND INBOX {5}\r\n", "+"},
		{"hello\r\n", "i2 OK"},
		{"i3 id NIL\r\n", "i3 OK"},
	}
	for _, byteByByte := range []bool{false, true} {
		p := &fakeProvider{}
		f := newIDFilter(p)
		for _, s := range steps {
			chunks := []string{s.app}
			if byteByByte {
				chunks = strings.Split(s.app, "")
			}
			for _, c := range chunks {
				f.Write([]byte(c))
			}
			if len(p.replies) != 1 || !strings.HasPrefix(p.replies[0], s.reply) {
				t.Fatalf("after %q the provider said %q, want %q (byte by byte: %v)", s.app, p.replies, s.reply, byteByByte)
			}
			p.replies = nil
		}
		want := "i1 ID (\"x1\" {0}\r\n \"x2\" {0}\r\n \"x3\" {0}\r\n)\r\n" +
			"i2 APPEND INBOX {5}\r\nhello\r\n" + "i3 ID NIL\r\n"
		if got := p.got.String(); got != want {
			t.Errorf("the provider got %q, want %q", got, want)
		}
	}
}

// fakeProvider reads commands as an IMAP server does, and answers "+" to
// each synchronizing literal header and "tag OK" to each whole command.
type fakeProvider struct {
	got     bytes.Buffer // all it was sent
	pending []byte       // what it has not read yet
	literal int          // literal bytes still to read
	tag     string       // the current command's, "" between commands
	replies []string
}

func (p *fakeProvider) Write(b []byte) (int, error) {
	p.got.Write(b)
	p.pending = append(p.pending, b...)
	for {
		if p.literal > 0 {
			k := min(p.literal, len(p.pending))
			p.literal -= k
			p.pending = p.pending[k:]
			if p.literal > 0 {
				return len(b), nil
			}
		}
		line, err := bufio.NewReader(bytes.NewReader(p.pending)).ReadSlice('\n')
		if err != nil {
			return len(b), nil
		}
		p.pending = p.pending[len(line):]
		if p.tag == "" {
			p.tag, _, _ = strings.Cut(string(line), " ")
		}
		if size, sync, ok := fakeLiteralHeader(string(line)); ok {
			p.literal = size
			if sync {
				p.replies = append(p.replies, "+ go ahead")
			}
			continue
		}
		p.replies = append(p.replies, p.tag+" OK done")
		p.tag = ""
	}
}

// fakeLiteralHeader reads a literal header at the end of a line, written
// apart from the filter's own, for tests to check it against.
func fakeLiteralHeader(line string) (size int, sync, ok bool) {
	l := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	l, found := strings.CutSuffix(l, "}")
	i := strings.LastIndexByte(l, '{')
	if !found || i < 0 {
		return 0, false, false
	}
	digits := l[i+1:]
	sync = true
	if d, cut := strings.CutSuffix(digits, "+"); cut {
		digits, sync = d, false
	} else if d, cut := strings.CutSuffix(digits, "-"); cut {
		digits, sync = d, false
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false, false
	}
	n, err := strconv.Atoi(digits)
	return n, sync, err == nil
}

// Whatever the app sends, the filter holds no more than a command name:
// long tags, long lines, long ID fields and literals cost it nothing.
func TestIDFilterMemory(t *testing.T) {
	chunk := bytes.Repeat([]byte("x"), 4096)
	for _, start := range []string{
		"",                                 // a tag
		"j1 SEARCH ",                       // a command line
		"j2 ID (\"name\" \"",               // an ID field
		"j3 APPEND INBOX {1000000000}\r\n", // literal bytes to pass
		"j4 ID (\"name\" {1000000000}\r\n", // literal bytes to drop
	} {
		f := newIDFilter(io.Discard)
		f.Write([]byte(start))
		if n := testing.AllocsPerRun(100, func() { f.Write(chunk) }); n != 0 {
			t.Errorf("after %q: %v allocations a write", start, n)
		}
	}
}

// TestIDFilterReportsCompressOnce: the first COMPRESS the filter replaces
// is reported (the session audits it), and only the first.
func TestIDFilterReportsCompressOnce(t *testing.T) {
	var out bytes.Buffer
	n := 0
	f := &idFilter{w: &out, refusedCompress: func() { n++ }}
	io.WriteString(f, "a1 NOOP\r\na2 COMPRESS DEFLATE\r\na3 compress deflate\r\n")
	if n != 1 || out.String() != "a1 NOOP\r\na2 COMPRESS X-MAILPROXY-NONE\r\na3 COMPRESS X-MAILPROXY-NONE\r\n" {
		t.Fatalf("reported %d times; wrote %q", n, out.String())
	}
}
