package smtp

import (
	"bytes"
	"errors"
	"io"
)

// errHeaderTooLarge is a top-level header block longer than the scrubber's
// limit: it is refused, never passed on unscrubbed.
var errHeaderTooLarge = errors.New("the message's header block is too large")

// scrubber removes header fields, by name, from the top-level header block
// of a message (RFC 5322 §2.2) written through it, and passes the rest on
// untouched: the header block is held (up to limit bytes) until it ends,
// then written on with the fields removed, and from then on every byte
// goes straight through. So the body, and with it every MIME part's own
// headers, is never looked at or held, and signed mail (PGP/MIME,
// S/MIME) still verifies.
//
// A field is removed whole, its folded continuation lines (those starting
// with a space or tab) with it. Names match whole and without regard to
// case: "X-Mailer" removes "x-mailer:" and "X-Mailer :" but not
// "X-Mailer-Foo:". Lines end in CRLF or a bare LF. The header block ends
// at the first empty line, or, as MTAs read it, at the first line that is
// not a header field or a continuation of one (a first line starting with
// a space or tab included; then that line is the body's first); a message
// without either is all header block, flushed by Close.
type scrubber struct {
	w     io.Writer
	names []string
	limit int

	held    []byte // the header block so far, scrubbed
	line    []byte // the current line, until its LF
	seen    int    // bytes of the header block read so far
	drop    bool   // the current field is being removed
	field   bool   // a header field has started the block
	body    bool   // past the header block
	removed int    // fields removed
	err     error  // sticky
}

func newScrubber(w io.Writer, names []string, limit int) *scrubber {
	// With nothing to remove (scrub_headers = []) the message streams as
	// it comes: no header block is held, so max_header_block does not
	// apply.
	return &scrubber{w: w, names: names, limit: limit, body: len(names) == 0}
}

// Write takes the next bytes of the message. An error is either
// errHeaderTooLarge, or the error of the writer underneath.
func (s *scrubber) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.body {
		n, err := s.w.Write(p)
		s.err = err
		return n, err
	}
	for i := 0; i < len(p); {
		chunk := p[i:]
		end := bytes.IndexByte(chunk, '\n')
		if end >= 0 {
			chunk = chunk[:end+1]
		}
		s.seen += len(chunk)
		if s.seen > s.limit {
			s.err = errHeaderTooLarge
			return i, s.err
		}
		s.line = append(s.line, chunk...)
		i += len(chunk)
		if end < 0 {
			break
		}
		s.endLine()
		if s.body {
			if err := s.flush(); err != nil {
				return i, err
			}
			n, err := s.w.Write(p[i:])
			s.err = err
			return i + n, err
		}
	}
	return len(p), nil
}

// Close ends the message: a header block that never ended (no body) is
// scrubbed and written now, its last line with or without a line end.
func (s *scrubber) Close() error {
	if s.err != nil || s.body {
		return s.err
	}
	if len(s.line) > 0 {
		s.endLine()
	}
	return s.flush()
}

// Removed is the number of header fields removed so far.
func (s *scrubber) Removed() int { return s.removed }

func (s *scrubber) flush() error {
	if len(s.held) > 0 {
		if _, err := s.w.Write(s.held); err != nil {
			s.err = err
			return err
		}
	}
	s.held = nil
	return nil
}

// endLine decides the fate of the complete line in s.line.
func (s *scrubber) endLine() {
	line := s.line
	s.line = s.line[:0]
	switch {
	case string(line) == "\n" || string(line) == "\r\n":
		s.body = true
	case line[0] == ' ' || line[0] == '\t':
		if !s.field {
			// A continuation with no field before it: MTAs (Postfix's
			// is_header, Go's textproto) start the body here.
			s.body = true
			break
		}
		if s.drop {
			return
		}
	default:
		name, ok := fieldName(line)
		if !ok {
			s.body = true
			break
		}
		s.field = true
		s.drop = s.listed(name)
		if s.drop {
			s.removed++
			return
		}
	}
	s.held = append(s.held, line...)
}

func (s *scrubber) listed(name []byte) bool {
	for _, n := range s.names {
		if len(n) == len(name) && bytes.EqualFold([]byte(n), name) {
			return true
		}
	}
	return false
}

// fieldName returns the name of the header field that line starts, and
// false when line is not a header field: the name is printable US-ASCII
// other than ':' (RFC 5322 §3.6.8), followed by ':', or by spaces or tabs
// and then ':' (the obsolete form of §4.5.8, still met).
func fieldName(line []byte) ([]byte, bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, false
	}
	name := bytes.TrimRight(line[:colon], " \t")
	if len(name) == 0 {
		return nil, false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return nil, false
		}
	}
	return name, true
}
