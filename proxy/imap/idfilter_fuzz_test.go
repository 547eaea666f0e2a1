package imap

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// secretMark stands for an ID field's content: the filter must never
// pass it on.
const secretMark = "SECRETMARK"

// FuzzIDFilter checks the filter two ways on each input.
//
// As a raw stream: however it is cut into writes (the first two bytes
// choose where), the provider gets the same bytes; and when the stream
// has no literals and no COMPRESS, so that its framing is plain lines,
// and secretMark occurs only in ID commands' arguments, it never reaches
// the provider.
//
// As a recipe for a well-formed stream of commands (idRecipe): the
// provider gets exactly what it should, and no byte of any ID field.
func FuzzIDFilter(f *testing.F) {
	for _, s := range []string{
		"a1 NOOP\r\n",
		"a2 ID (\"name\" \"SECRETMARK\" \"os\" \"SECRETMARK\")\r\na3 NOOP\r\n",
		"a4 id (\"name\" {10}\r\nSECRETMARK \"os\" {10+}\r\nSECRETMARK)\r\na5 NOOP\r\n",
		"a6 ID ({4}\r\nname ~{10}\r\nSECRETMARK {2-}\r\nos {10}\r\nSECRETMARK)\r\n",
		"a7 APPEND INBOX {27}\r\na8 ID (\"name\" \"x\")\r\nbody\r\n a9 NOOP\r\n",
		"b1 IDLE\r\nDONE\r\nb2 ID (\"x\" \"SECRETMARK\")\nb3 NOOP\n",
		"b4 ID (\"name\" {9223372036854775808}\r\nb5 ID (\"a\" \"SECRETMARK\")\r\n",
		"b6 COMPRESS DEFLATE\r\n\x78\x9c",
		strings.Repeat("t", 300) + " ID (\"SECRETMARK\" \"x\")\r\n",
		" ID (\"name\" \"x\")\r\n\r\n\n{4}\r\nc1 ID\r\n",
		// Recipes: for each command a tag byte, a line end byte, an op
		// byte and its parameters.
		"\x00\x00\x02\x05\x01\x07\x00\x10\x03\x04\x11\x00\x05",
		"\x10\x80\x02\x03\x05\x05\x05\x11\x11\x11\x01\x02\x03\x00\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		whole := filterChunks(string(data))
		i, j := cutPoints(data, len(data))
		if got := filterChunks(string(data[:i]), string(data[i:j]), string(data[j:])); got != whole {
			t.Fatalf("cut at %d and %d: %q, uncut: %q", i, j, got, whole)
		}
		if len(data) <= 1<<12 {
			if got := filterChunks(strings.Split(string(data), "")...); got != whole {
				t.Fatalf("byte by byte: %q, at once: %q", got, whole)
			}
		}
		if plainLines(data) && marksOnlyInID(data) && strings.Contains(whole, secretMark) {
			t.Fatalf("an ID field reached the provider: %q", whole)
		}

		in, want := idRecipe(data)
		i, j = cutPoints(data, len(in))
		got := filterChunks(in[:i], in[i:j], in[j:])
		if got != want {
			t.Fatalf("recipe %q, cut at %d and %d:\n  in %q\n got %q\nwant %q", data, i, j, in, got, want)
		}
		if strings.Contains(got, "K") {
			t.Fatalf("a byte of an ID field reached the provider:\n  in %q\n got %q", in, got)
		}
	})
}

// cutPoints chooses two places to cut n bytes, from data's first bytes.
func cutPoints(data []byte, n int) (int, int) {
	var a, b int
	if len(data) >= 2 {
		a, b = int(data[0]), int(data[1])
	}
	i := a * n / 255
	return i, i + b*(n-i)/255
}

// plainLines says whether the stream is framed by lines alone: no literal
// can start, and nothing turns the filter off.
func plainLines(data []byte) bool {
	return !bytes.ContainsRune(data, '{') && !bytes.Contains(bytes.ToUpper(data), []byte("COMPRESS"))
}

// marksOnlyInID says whether every secretMark in a stream of plain lines
// is inside an ID command's arguments: after "tag ID" on its line, where
// the tag is not empty and ID is followed by SP, CR, LF or the end.
func marksOnlyInID(data []byte) bool {
	for line := range bytes.Lines(data) {
		args := len(line)
		if sp := bytes.IndexByte(line, ' '); sp > 0 {
			name := line[sp+1:]
			if len(name) >= 2 && name[0]|0x20 == 'i' && name[1]|0x20 == 'd' &&
				(len(name) == 2 || name[2] == ' ' || name[2] == '\r' || name[2] == '\n') {
				args = sp + len(" ID")
			}
		}
		if bytes.Contains(line[:args], []byte(secretMark)) {
			return false
		}
	}
	return true
}

// idRecipe turns data into a well-formed stream of commands and what the
// provider must get of it. Only ID commands' fields contain the byte 'K'
// (secretMark among them): the tags, command names and other commands'
// arguments and literals never do.
func idRecipe(data []byte) (in, want string) {
	r := recipe{data: data}
	var i, w strings.Builder
	for n := 1; len(r.data) > 0 && n <= 64; n++ {
		tag := "t" + strconv.Itoa(n)
		if r.next()%8 == 0 {
			tag = strings.Repeat("t", 100+int(r.next()))
		}
		eol := "\r\n"
		if r.next()%4 == 0 {
			eol = "\n"
		}
		switch r.next() % 5 {
		case 0: // a command that passes
			names := []string{"NOOP", "SEARCH", "UID", "IDX", "IDLE", "Idle", "COMPRESSED"}
			s := tag + " " + names[int(r.next())%len(names)]
			if args := r.text(int(r.next()%32), "{\r\n"); args != "" {
				s += " " + args
			}
			s += eol
			i.WriteString(s)
			w.WriteString(s)
		case 1: // literals that pass, unlooked at
			s := tag + " APPEND INBOX"
			for k := 0; k == 0 || r.next()%3 == 1; k++ {
				size := int(r.next() % 64)
				s += " " + r.literalHeader(size) + eol + r.text(size, "")
			}
			s += eol
			i.WriteString(s)
			w.WriteString(s)
		case 2, 3: // an ID command
			names := []string{"ID", "id", "Id"}
			i.WriteString(tag + " " + names[int(r.next())%len(names)] + " (")
			syncs := 0
			for k, fields := 0, int(r.next()%8); k < fields; k++ {
				if k > 0 {
					i.WriteString(" ")
				}
				field := r.text(int(r.next()%16), "")
				if r.next()%2 == 0 {
					field += secretMark
				}
				if r.next()%2 == 0 {
					// A quoted string holds neither quotes nor line ends.
					field = strings.Map(func(c rune) rune {
						if strings.ContainsRune("\"\\\r\n", c) {
							return 'K'
						}
						return c
					}, field)
					i.WriteString(`"` + field + `"`)
					continue
				}
				h := r.literalHeader(len(field))
				if !strings.HasSuffix(h, "+}") && !strings.HasSuffix(h, "-}") {
					syncs++
					if syncs == 1 {
						w.WriteString(tag + ` ID ("x1" {0}` + "\r\n")
					} else {
						w.WriteString(` "x` + strconv.Itoa(syncs) + `" {0}` + "\r\n")
					}
				}
				i.WriteString(h + eol + field)
			}
			i.WriteString(")" + eol)
			if syncs == 0 {
				w.WriteString(tag + " ID NIL\r\n")
			} else {
				w.WriteString(")\r\n")
			}
		case 4: // IDLE's DONE is no command
			s := tag + " IDLE" + eol + "DONE" + eol
			i.WriteString(s)
			w.WriteString(s)
		}
	}
	return i.String(), w.String()
}

// recipe reads a recipe's bytes; past their end it reads zeros.
type recipe struct{ data []byte }

func (r *recipe) next() byte {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return b
}

// text reads n bytes of text without 'K' or any byte of not.
func (r *recipe) text(n int, not string) string {
	b := make([]byte, n)
	for i := range b {
		c := r.next()
		if c == 'K' || strings.IndexByte(not, c) >= 0 {
			c = 'k'
		}
		b[i] = c
	}
	return string(b)
}

// literalHeader chooses a kind of literal of size bytes.
func (r *recipe) literalHeader(size int) string {
	n := strconv.Itoa(size)
	switch r.next() % 4 {
	case 0:
		return "{" + n + "+}"
	case 1:
		return "{" + n + "-}"
	case 2:
		return "~{" + n + "}"
	}
	return "{" + n + "}"
}
