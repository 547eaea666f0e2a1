package imap

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"mailproxy/proxy"
)

// command is one command of the app before login, parsed as far as
// mailproxy needs (RFC 9051 §2.2.1, §9).
type command struct {
	tag  string
	name string // upper case
	args []arg
}

type argKind int

const (
	atomArg argKind = iota
	stringArg
	nilArg
	listArg
)

// arg is an atom, a string (quoted or literal), NIL or a parenthesised list.
type arg struct {
	kind argKind
	s    string
	list []arg
}

// errSyntax is a command mailproxy cannot parse; the text says why.
type errSyntax struct {
	tag string
	msg string
}

func (e *errSyntax) Error() string { return e.msg }

// readCommand reads one whole command, answering "+" for synchronising
// literals. Every line and literal is read through p, under the pre-login
// bounds.
func readCommand(pl *proxy.Prelogin) (*command, error) {
	line, err := pl.ReadLine()
	if err != nil {
		return nil, err
	}
	p := &parser{r: pl, line: string(line)}
	tag := p.atom()
	if tag == "" || strings.ContainsAny(tag, "+") {
		return nil, &errSyntax{tag: "*", msg: "expected a tag"}
	}
	if !p.sp() {
		return nil, &errSyntax{tag: tag, msg: "expected a command after the tag"}
	}
	name := strings.ToUpper(p.atom())
	if name == "" {
		return nil, &errSyntax{tag: tag, msg: "expected a command"}
	}
	c := &command{tag: tag, name: name}
	for p.sp() {
		a, err := p.arg(0)
		if err != nil {
			return nil, wrapTag(tag, err)
		}
		c.args = append(c.args, a)
	}
	if p.pos != len(p.line) {
		return nil, &errSyntax{tag: tag, msg: fmt.Sprintf("unexpected %q", clip(p.line[p.pos:]))}
	}
	return c, nil
}

func wrapTag(tag string, err error) error {
	var se *errSyntax
	if errors.As(err, &se) {
		se.tag = tag
	}
	return err
}

type parser struct {
	r    *proxy.Prelogin
	line string
	pos  int
	args int // arguments and list elements so far
}

// maxArgs bounds the arguments and list elements of one command before
// login (an ID's 30 field pairs are the most a real one holds): each takes
// some 50 bytes of memory for 2 or 3 bytes of input ("" or ()), and {0+}
// literals chain lines, so the input budget alone would let one command
// hold 20 times its size.
const maxArgs = 100

func (p *parser) sp() bool {
	if p.pos < len(p.line) && p.line[p.pos] == ' ' {
		p.pos++
		return true
	}
	return false
}

// atom reads ATOM-CHARs (plus ']' and '\' for flags and tags, which we only
// skip over).
func (p *parser) atom() string {
	start := p.pos
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"`, c) >= 0 {
			break
		}
		p.pos++
	}
	return p.line[start:p.pos]
}

func (p *parser) arg(depth int) (arg, error) {
	if p.args++; p.args > maxArgs {
		// A bound, as max_line is: the session ends, on record.
		return arg{}, &proxy.LimitError{Detail: fmt.Sprintf("a command before login has more than %d arguments and list elements", maxArgs)}
	}
	if p.pos >= len(p.line) {
		return arg{}, &errSyntax{msg: "missing argument"}
	}
	switch c := p.line[p.pos]; c {
	case '"':
		return p.quoted()
	case '{':
		return p.literal()
	case '(':
		if depth > 4 {
			return arg{}, &errSyntax{msg: "lists nested too deeply"}
		}
		p.pos++
		var l []arg
		for p.pos < len(p.line) && p.line[p.pos] != ')' {
			if len(l) > 0 && !p.sp() {
				return arg{}, &errSyntax{msg: "expected a space in a list"}
			}
			a, err := p.arg(depth + 1)
			if err != nil {
				return arg{}, err
			}
			l = append(l, a)
		}
		if p.pos >= len(p.line) {
			return arg{}, &errSyntax{msg: "unterminated list"}
		}
		p.pos++
		return arg{kind: listArg, list: l}, nil
	}
	a := p.atom()
	if a == "" {
		return arg{}, &errSyntax{msg: fmt.Sprintf("unexpected %q", clip(p.line[p.pos:]))}
	}
	if strings.EqualFold(a, "NIL") {
		return arg{kind: nilArg}, nil
	}
	return arg{kind: atomArg, s: a}, nil
}

func (p *parser) quoted() (arg, error) {
	var b strings.Builder
	p.pos++ // opening quote
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		p.pos++
		switch c {
		case '"':
			return arg{kind: stringArg, s: b.String()}, nil
		case '\\':
			if p.pos >= len(p.line) {
				return arg{}, &errSyntax{msg: "unterminated quoted string"}
			}
			b.WriteByte(p.line[p.pos])
			p.pos++
		default:
			b.WriteByte(c)
		}
	}
	return arg{}, &errSyntax{msg: "unterminated quoted string"}
}

// literal reads {n}, {n+} or ~{n} at the end of the line, then n bytes, and
// continues with the next line (RFC 9051 §4.3, RFC 7888).
func (p *parser) literal() (arg, error) {
	end := strings.IndexByte(p.line[p.pos:], '}')
	if end < 0 || p.pos+end+1 != len(p.line) {
		return arg{}, &errSyntax{msg: "a literal must end the line"}
	}
	spec := p.line[p.pos+1 : p.pos+end]
	nonSync := strings.HasSuffix(spec, "+") || strings.HasSuffix(spec, "-")
	spec = strings.TrimRight(spec, "+-")
	n, err := strconv.ParseUint(spec, 10, 32)
	if err != nil {
		return arg{}, &errSyntax{msg: fmt.Sprintf("bad literal length %q", spec)}
	}
	// The bounds first: no "+" for a literal that would be refused.
	if err := p.r.CheckLiteral(int64(n)); err != nil {
		return arg{}, err
	}
	if !nonSync {
		if err := p.r.Printf("+ Ready for literal data\r\n"); err != nil {
			return arg{}, err
		}
	}
	buf, err := p.r.ReadLiteral(int64(n))
	if err != nil {
		return arg{}, err
	}
	next, err := p.r.ReadLine()
	if err != nil {
		return arg{}, err
	}
	p.line, p.pos = string(next), 0
	return arg{kind: stringArg, s: string(buf)}, nil
}

// astring returns an argument usable as an astring (atom or string).
func (a arg) astring() (string, bool) {
	switch a.kind {
	case atomArg, stringArg:
		return a.s, true
	}
	return "", false
}

// clip shortens text the app sent for an error message.
func clip(s string) string { return proxy.Printable(s, 40) }
