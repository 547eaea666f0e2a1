//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"strings"
)

// traceFields are the header fields a provider may put in front of a
// message it delivers. Anything else in front, or any change to the
// message itself, is a relay that altered the mail.
var traceFields = map[string]bool{
	"return-path":   true,
	"x-original-to": true,
	"delivered-to":  true,
	"received":      true,
}

// checkDelivered fails the step unless got is sent, byte for byte, behind
// trace header fields only. It returns those fields.
func (s *step) checkDelivered(what string, got, sent []byte) string {
	s.t.Helper()
	if !bytes.HasSuffix(got, sent) {
		s.Fatalf("%s is not the message as sent (%d bytes received, %d sent): %s", what, len(got), len(sent), firstDifference(got, sent))
	}
	prefix := string(got[:len(got)-len(sent)])
	for _, line := range strings.Split(strings.TrimSuffix(prefix, "\r\n"), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a folded field
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok || !traceFields[strings.ToLower(name)] {
			s.Fatalf("%s: the provider's fields in front of the message hold %q, not only trace fields:\n%s", what, clip(line), prefix)
		}
	}
	return prefix
}

// firstDifference explains where got stops matching sent, aligning the
// two on sent's first line.
func firstDifference(got, sent []byte) string {
	first := sent[:bytes.IndexByte(sent, '\n')+1]
	i := bytes.Index(got, first)
	if i < 0 {
		return fmt.Sprintf("the message's first line %q is not in what was received", clip(string(first)))
	}
	g := got[i:]
	n := 0
	for n < len(g) && n < len(sent) && g[n] == sent[n] {
		n++
	}
	ctx := func(b []byte) string {
		lo := max(0, n-40)
		hi := min(len(b), n+40)
		return fmt.Sprintf("%q", b[lo:hi])
	}
	if n == len(sent) {
		return fmt.Sprintf("the message as sent is followed by %d more bytes: %s", len(g)-n, ctx(g))
	}
	return fmt.Sprintf("first difference at byte %d of the message: received %s, sent %s", n, ctx(g), ctx(sent))
}

// lf turns CRLF line ends into LF (fetchmail hands its MDA LF lines).
func lf(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }
