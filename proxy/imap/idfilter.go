package imap

import (
	"bytes"
	"io"
	"strconv"
)

// idFilter keeps the app's ID fields from the provider after login
// (DESIGN.md, guarantee 6). Before login mailproxy answers ID itself; after
// login the relay copies the app's bytes unmodified except that an ID
// command (RFC 2971) is replaced by "tag ID NIL": the provider still
// answers it under the app's own tag, but learns nothing about the app,
// its version or the computer. iOS Mail, for one, sends ID after login.
//
// To find commands in the stream the filter follows IMAP's framing: lines,
// and literals ({n}, {n+}, ~{n}) whose bytes are never looked at. It stops
// looking after a COMPRESS command (RFC 4978): what follows is deflated,
// and must pass untouched.
type idFilter struct {
	w io.Writer

	head     []byte // the start of the current line, until it is decided
	decided  bool   // the current line's command is known
	dropID   bool   // the current command is ID: drop it, send "tag ID NIL"
	tag      []byte // the ID command's tag
	inCmd    bool   // the current line continues a command after a literal
	tail     []byte // the last bytes of the current line, for its literal
	literal  int64  // literal bytes still to pass (or drop)
	off      bool   // after COMPRESS: pass everything
	compress bool   // the current command is COMPRESS
}

// headMax bounds what the filter holds back to decide a line: a tag, a
// space and a command name fit easily.
const headMax = 128

func newIDFilter(w io.Writer) io.Writer { return &idFilter{w: w} }

func (f *idFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch {
		case f.off:
			_, err := f.w.Write(p)
			return n, err
		case f.literal > 0:
			k := int(min(int64(len(p)), f.literal))
			if !f.dropID {
				if _, err := f.w.Write(p[:k]); err != nil {
					return n - len(p), err
				}
			}
			f.literal -= int64(k)
			p = p[k:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i+1]
		}
		if err := f.line(seg, i >= 0); err != nil {
			return n - len(p), err
		}
		p = p[len(seg):]
	}
	return n, nil
}

// line takes a piece of the current line; eol says it ends the line.
func (f *idFilter) line(seg []byte, eol bool) error {
	if !f.decided {
		f.head = append(f.head, seg...)
		if !eol && len(f.head) < headMax {
			return nil // not enough yet to tell the command
		}
		f.decide()
		seg, f.head = f.head, nil
	}
	f.tail = append(f.tail, seg...)
	if len(f.tail) > 64 {
		f.tail = f.tail[len(f.tail)-64:]
	}
	if !f.dropID {
		if _, err := f.w.Write(seg); err != nil {
			return err
		}
	}
	if !eol {
		return nil
	}
	// The line is over: a literal continues the command, else it ends.
	f.literal, f.inCmd = trailingLiteralSize(f.tail)
	f.tail, f.decided = f.tail[:0], false
	if f.inCmd {
		f.decided = true // the next segment is the same command's
		return nil
	}
	if f.dropID {
		f.dropID = false
		if _, err := f.w.Write(append(append(f.tag, " ID NIL"...), "\r\n"...)); err != nil {
			return err
		}
	}
	if f.compress {
		f.off = true
	}
	return nil
}

// decide looks at the start of a command line: "tag SP name ...".
func (f *idFilter) decide() {
	f.decided = true
	f.compress = false
	tag, rest, ok := bytes.Cut(f.head, []byte(" "))
	if !ok || len(tag) == 0 {
		return
	}
	name := rest
	if i := bytes.IndexAny(rest, " \r\n"); i >= 0 {
		name = rest[:i]
	}
	switch {
	case bytes.EqualFold(name, []byte("ID")):
		f.dropID = true
		f.tag = append(f.tag[:0], tag...)
	case bytes.EqualFold(name, []byte("COMPRESS")):
		f.compress = true
	}
}

// trailingLiteralSize reads "{n}", "{n+}", "{n-}" or "~{n}" at the end of a
// line (before CRLF).
func trailingLiteralSize(line []byte) (int64, bool) {
	l := bytes.TrimRight(line, "\r\n")
	if !bytes.HasSuffix(l, []byte("}")) {
		return 0, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	digits := bytes.TrimRight(l[i+1:len(l)-1], "+-")
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
