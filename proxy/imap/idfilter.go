package imap

import (
	"bytes"
	"io"
	"math"
	"strconv"
)

// idFilter keeps the app's ID fields from the provider after login
// (docs/design.md, guarantee 6). Before login mailproxy answers ID itself; after
// login the relay copies the app's bytes unmodified except that an ID
// command (RFC 2971) is replaced: the provider still answers it under the
// app's own tag, but learns nothing about the app, its version or the
// computer. iOS Mail, for one, sends ID after login.
//
// An ID command without synchronizing literals becomes "tag ID NIL". A
// synchronizing literal ({n} or ~{n}) makes the app wait for the server's
// "+" (RFC 9051, section 4.3), so the provider must be asked for exactly
// one "+" per such literal, or the app hangs: at the command's first one
// the filter sends `tag ID ("x1" {0}`, at each further one ` "xK" {0}`,
// and when the command ends ")". The provider sees
// `tag ID ("x1" "" "x2" "")` and answers "+" to each empty literal; the
// relay's other direction carries those to the app. The app's strings,
// literal bytes and literal lengths are all dropped; non-synchronizing
// literals ({n+}, {n-}) need no answer and are dropped silently.
//
// To find commands in the stream the filter follows IMAP's framing: lines,
// and literals ({n}, {n+}, {n-}, ~{n}) whose bytes are never looked at. A
// literal header counts only in a command's arguments, after "tag name ",
// where a server reads one. The filter passes the tag as it comes and
// holds at most a command name back, never a line or a literal, so its
// memory is the same whatever the app sends. A COMPRESS command (RFC
// 4978) is replaced the same way by `tag COMPRESS X-MAILPROXY-NONE`, a
// mechanism no provider offers: the provider refuses it, the app goes on
// uncompressed (RFC 4978 section 3), and the filter can go on reading the
// stream — deflated, an ID would pass it unseen.
type idFilter struct {
	w io.Writer
	// refusedCompress, if set, is called at the first COMPRESS the filter
	// replaces (the session audits it: mailproxy refused something the
	// app asked for).
	refusedCompress func()

	literal int64         // literal bytes still to pass (or drop, in ID)
	at      linePos       // where in the current line the filter is
	tagged  bool          // the current line has a tag byte so far
	name    [nameMax]byte // the command name, held back until known
	nameLen int           // how much of name is held
	lit     litScan       // the current line's trailing literal, if any
	cmd     cmdKind       // the current command, once its name is known
	syncs   int           // synchronizing literals so far in the ID command
}

// linePos is where in a line the filter is.
type linePos uint8

const (
	atTag   linePos = iota // a command's tag (or a line that is no command)
	atName                 // after "tag ": the command name, held back
	atArgs                 // a command's arguments, or its line after a literal
	atOther                // a line that is no command: passes as it is
)

// cmdKind is what the filter must do with a command.
type cmdKind uint8

const (
	cmdOther    cmdKind = iota // pass
	cmdID                      // drop, send an ID without the app's fields
	cmdCompress                // drop, send a COMPRESS the provider refuses
)

// replaced reports a command whose name, arguments and literals are
// dropped and written anew (send).
func (k cmdKind) replaced() bool { return k == cmdID || k == cmdCompress }

// nameMax is the longest command name the filter acts on, COMPRESS.
const nameMax = len("COMPRESS")

func newIDFilter(w io.Writer) io.Writer { return &idFilter{w: w} }

func (f *idFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch {
		case f.literal > 0:
			k := int(min(int64(len(p)), f.literal))
			if !f.cmd.replaced() {
				if _, err := f.w.Write(p[:k]); err != nil {
					return n - len(p), err
				}
			}
			f.literal -= int64(k)
			p = p[k:]
			continue
		}
		k, err := f.line(p)
		if err != nil {
			return n - len(p), err
		}
		p = p[k:]
	}
	return n, nil
}

// line takes the start of p up to the end of the current line (its LF),
// or all of p when the line goes on, and says how much it took.
func (f *idFilter) line(p []byte) (int, error) {
	seg, eol := p, false
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		seg, eol = p[:i+1], true
	}
	rest := seg
	if f.at == atTag {
		sp := bytes.IndexByte(rest, ' ')
		switch {
		case sp < 0:
			// All tag so far, or a line without a command (DONE).
			f.tagged = f.tagged || len(rest) > 0
			if _, err := f.w.Write(rest); err != nil {
				return 0, err
			}
			if eol {
				return len(seg), f.endLine()
			}
			return len(seg), nil
		case sp == 0 && !f.tagged:
			f.at = atOther // no tag: no command
		default:
			// The tag passes: the provider answers under the app's.
			if _, err := f.w.Write(rest[:sp+1]); err != nil {
				return 0, err
			}
			rest = rest[sp+1:]
			f.at = atName
		}
	}
	if f.at == atName {
		i := 0
		for ; i < len(rest); i++ {
			c := rest[i]
			if c == ' ' || c == '\r' || c == '\n' || f.nameLen == nameMax {
				break
			}
			f.name[f.nameLen] = c
			f.nameLen++
		}
		if i == len(rest) {
			return len(seg), nil // the name may go on
		}
		// The name ended, at its delimiter (the arguments' first byte), or
		// it is longer than any the filter acts on.
		name := f.name[:f.nameLen]
		switch c := rest[i]; {
		case c != ' ' && c != '\r' && c != '\n':
		case equalFoldASCII(name, "ID"):
			f.cmd = cmdID
		case equalFoldASCII(name, "COMPRESS"):
			f.cmd = cmdCompress
		}
		if !f.cmd.replaced() {
			if _, err := f.w.Write(name); err != nil {
				return 0, err
			}
		}
		rest = rest[i:]
		f.at = atArgs
	}
	if !f.cmd.replaced() {
		if _, err := f.w.Write(rest); err != nil {
			return 0, err
		}
	}
	if f.at == atArgs {
		f.lit.feed(bytes.TrimSuffix(rest, []byte("\n")))
	}
	if eol {
		return len(seg), f.endLine()
	}
	return len(seg), nil
}

// equalFoldASCII compares a command name as IMAP does: ASCII letters
// without regard to case, and nothing else (bytes.EqualFold would also
// fold Unicode, such as "ſ" to "S").
func equalFoldASCII(name []byte, s string) bool {
	if len(name) != len(s) {
		return false
	}
	for i, c := range name {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// endLine is called after a line's LF: a literal continues the command,
// else the command ends.
func (f *idFilter) endLine() error {
	size, sync, ok := f.lit.literal()
	f.lit = litScan{}
	if f.at == atArgs && ok {
		f.literal = size
		if f.cmd.replaced() && sync {
			f.syncs++
			return f.send(f.syncs)
		}
		return nil
	}
	var err error
	if f.cmd.replaced() {
		err = f.send(0)
	}
	if f.cmd == cmdCompress && f.refusedCompress != nil {
		f.refusedCompress()
		f.refusedCompress = nil // once a session is enough
	}
	f.at, f.tagged, f.nameLen, f.cmd, f.syncs = atTag, false, 0, cmdOther, 0
	return err
}

// send writes the ID command's part after "tag ": for k > 0 the field of
// its k-th synchronizing literal, an empty literal the provider answers
// with "+"; for k == 0 its end.
//
// A COMPRESS is written alike: `COMPRESS X-MAILPROXY-NONE`, with an empty
// literal for each synchronizing one of the app's (the provider answers
// "+" to each, and refuses the command).
func (f *idFilter) send(k int) error {
	var b []byte
	switch {
	case f.cmd == cmdCompress && k == 1:
		b = []byte("COMPRESS X-MAILPROXY-NONE {0}\r\n")
	case f.cmd == cmdCompress && k > 1:
		b = []byte(" {0}\r\n")
	case f.cmd == cmdCompress && f.syncs > 0:
		b = []byte("\r\n")
	case f.cmd == cmdCompress:
		b = []byte("COMPRESS X-MAILPROXY-NONE\r\n")
	case k == 1:
		b = []byte(`ID ("x1" {0}` + "\r\n")
	case k > 1:
		b = append(strconv.AppendInt([]byte(` "x`), int64(k), 10), `" {0}`+"\r\n"...)
	case f.syncs > 0:
		b = []byte(")\r\n")
	default:
		b = []byte("ID NIL\r\n")
	}
	_, err := f.w.Write(b)
	return err
}

// litScan recognizes a literal header, "{n}", "{n+}", "{n-}" or "~{n}",
// at the end of a line (before its LF, after an optional CR), fed the
// line's bytes piece by piece. The literal8 "~" needs no check: it changes
// neither the length nor whether the literal is synchronizing.
type litScan struct {
	state litState
	size  int64
	sync  bool
	big   bool // the length does not fit an int64: no literal
}

type litState uint8

const (
	litNone   litState = iota
	litOpen            // "{"
	litDigits          // "{" digits
	litSign            // "{" digits "+" or "-"
	litClosed          // "}"
	litCR              // "}" CR
)

// feed takes the next bytes of the line, without its LF.
func (s *litScan) feed(b []byte) {
	// Only the bytes from the last "{" on can end in a header.
	if i := bytes.LastIndexByte(b, '{'); i >= 0 {
		*s = litScan{state: litOpen}
		b = b[i+1:]
	}
	for _, c := range b {
		if s.state == litNone {
			return
		}
		switch {
		case (s.state == litOpen || s.state == litDigits) && '0' <= c && c <= '9':
			d := int64(c - '0')
			if s.size > (math.MaxInt64-d)/10 {
				s.big = true
			} else {
				s.size = s.size*10 + d
			}
			s.state = litDigits
		case s.state == litDigits && (c == '+' || c == '-'):
			s.state = litSign
		case s.state == litDigits && c == '}':
			s.state, s.sync = litClosed, true
		case s.state == litSign && c == '}':
			s.state = litClosed
		case s.state == litClosed && c == '\r':
			s.state = litCR
		default:
			s.state = litNone
		}
	}
}

// literal says whether the line fed so far ends in a literal header, and
// its length and kind.
func (s *litScan) literal() (size int64, sync, ok bool) {
	if (s.state != litClosed && s.state != litCR) || s.big {
		return 0, false, false
	}
	return s.size, s.sync, true
}
