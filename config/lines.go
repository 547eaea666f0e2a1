package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// doc knows where each key of a document stands, so that a problem found
// after decoding can still name its line.
type doc struct {
	file  string
	lines map[string]int // "provider.1.min_tls" → line; "provider.1" → its header
	// bad are the paths of values that could not be decoded (decode),
	// unknownTable whether the document has a table mailproxy does not
	// know, syntax whether it could not be parsed at all: build leaves
	// out what follows from them.
	bad          map[string]bool
	failed       []string // providers that did not load (build)
	unknownTable bool
	syntax       bool
}

func newDoc(file string) *doc {
	return &doc{file: file, lines: map[string]int{}, bad: map[string]bool{}}
}

// index parses the document for key positions and reports unknown keys and
// tables, with a suggestion when a known key is a typo away.
func index(file string, data []byte) (*doc, Errors) {
	d := newDoc(file)
	var errs Errors
	var p unstable.Parser
	p.Reset(data)
	prefix := "" // internal path of the current table
	table := ""  // its kind, a key of knownKeys
	count := map[string]int{}
	keyOf := func(n *unstable.Node) (parts []string, line int) {
		it := n.Key()
		for it.Next() {
			k := it.Node()
			parts = append(parts, string(k.Data))
			if line == 0 {
				line = p.Shape(k.Raw).Start.Line
			}
		}
		return parts, line
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyOf(e)
			name := strings.Join(parts, ".")
			if sub, ok := oauth2Table(parts, count["provider"]); ok && e.Kind == unstable.Table {
				prefix, table = sub, name
				d.lines[prefix] = line
				continue
			}
			if len(parts) != 1 || !slices.Contains(knownKeys[""], name) {
				errs = append(errs, &Error{File: file, Line: line, Key: "[" + name + "]",
					Msg: "unknown table" + suggest(name, knownKeys[""])})
				d.unknownTable = true
				prefix, table = "?", "?"
				continue
			}
			isArray := e.Kind == unstable.ArrayTable
			if isArray != (name == "provider" || name == "listen") {
				want := "[" + name + "]"
				if !isArray {
					want = "[[" + name + "]]"
				}
				errs = append(errs, &Error{File: file, Line: line, Key: name, Msg: "write this table as " + want})
			}
			table = name
			prefix = name
			if isArray {
				prefix = name + "." + strconv.Itoa(count[name])
				count[name]++
			}
			d.lines[prefix] = line
		case unstable.KeyValue:
			parts, line := keyOf(e)
			if table == "?" {
				continue
			}
			key := parts[0]
			if !slices.Contains(knownKeys[table], key) || len(parts) > 1 {
				display, where := strings.Join(parts, "."), ""
				if table == "provider" || table == "listen" {
					display += fmt.Sprintf(" (%s #%d)", table, count[table])
				}
				if table != "" {
					where = " in [" + table + "]"
				}
				errs = append(errs, &Error{File: file, Line: line, Key: display,
					Msg: "unknown key" + where + suggest(key, knownKeys[table])})
				if best := closest(key, knownKeys[table]); best != "" && len(parts) == 1 {
					// A typo: the key meant is not missing, it is misspelt.
					d.bad[joinPath(prefix, best)] = true
				}
				continue
			}
			if table == "" && (key == "provider" || key == "listen" || key == "log" || key == "limits" || key == "status") {
				errs = append(errs, &Error{File: file, Line: line, Key: key,
					Msg: "write this as a table ([" + key + "] or [[" + key + "]]), not an inline value"})
				continue
			}
			d.lines[joinPath(prefix, key)] = line
			if sub, ok := knownKeys[table+"."+key]; ok && e.Value().Kind == unstable.InlineTable {
				// oauth2 = { ... }: its keys are checked as a
				// [provider.oauth2] table's are.
				it := e.Value().Children()
				for it.Next() {
					kv := it.Node()
					if kv.Kind != unstable.KeyValue {
						continue
					}
					inner, iline := keyOf(kv)
					path := joinPath(prefix, key+"."+inner[0])
					if slices.Contains(sub, inner[0]) && len(inner) == 1 {
						d.lines[path] = iline
						continue
					}
					display := key + "." + strings.Join(inner, ".")
					if table == "provider" || table == "listen" {
						display += fmt.Sprintf(" (%s #%d)", table, count[table])
					}
					errs = append(errs, &Error{File: file, Line: iline, Key: display,
						Msg: "unknown key in [" + table + "." + key + "]" + suggest(inner[0], sub)})
					if best := closest(inner[0], sub); best != "" && len(inner) == 1 {
						d.bad[joinPath(prefix, key+"."+best)] = true
					}
				}
			}
		}
	}
	if err := p.Error(); err != nil {
		line := 0
		var pe *unstable.ParserError
		if e, ok := err.(*unstable.ParserError); ok {
			pe = e
			line = p.Shape(p.Range(pe.Highlight)).Start.Line
		}
		d.syntax = true
		return d, append(errs, &Error{File: file, Line: line, Msg: "TOML syntax error: " + err.Error()})
	}
	return d, errs
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// at returns an *Error for key (a path such as "provider.1.min_tls"), with
// the line of the key, or of its table when the key is absent.
func (d *doc) at(path, display string, format string, args ...any) *Error {
	line, ok := d.lines[path]
	for up := path; !ok && strings.Contains(up, "."); {
		up = up[:strings.LastIndexByte(up, '.')]
		line, ok = d.lines[up]
	}
	return &Error{File: d.file, Line: line, Key: display, Msg: fmt.Sprintf(format, args...), path: path}
}

// followsFrom reports whether e is only a consequence of a value decode
// could not read (a required value reported missing).
func (d *doc) followsFrom(e *Error) bool {
	return e.path != "" && d.bad[e.path]
}

// suggest returns ` (did you mean "x"?)` for a key one or two edits away
// from a known one.
func suggest(key string, known []string) string {
	best := closest(key, known)
	if best == "" {
		return "; known keys: " + strings.Join(known, ", ")
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// closest is the known key one or two edits away from key, if any.
func closest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := editDistance(key, k); dist < bestD {
			best, bestD = k, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
