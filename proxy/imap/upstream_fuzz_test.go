package imap

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzUpstreamResponse reads the provider's responses before login (the
// greeting, CAPABILITY and login replies) from arbitrary bytes. It must
// not panic whatever literal sizes the provider announces, and each
// response must be what the provider sent: its first line, then as many
// literals and continuation lines as it announced, and all of them
// together never more than maxUpstreamBytes.
//
//	go test -run '^$' -fuzz '^FuzzUpstreamResponse$' -fuzztime 60s ./proxy/imap/
func FuzzUpstreamResponse(f *testing.F) {
	for _, s := range []string{
		"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n",
		"* 1 FETCH (BODY[] {5}\r\nhello)\r\nmp1 OK done\r\n",
		"* ID (\"name\" {3+}\r\nabc)\r\n",
		"* X {0}\r\n\r\n",
		"* X {2000000}\r\n",
		"* X {-1}\r\n",
		"* X {+5}\r\nabcde\r\n",
		"* X {9223372036854775807}\r\n",
		"* X {9223372036854775790}\r\n",
		"* X {18446744073709551615}\r\n",
		"* X {1}\r\na{1}\r\nb{1}\r\nc\r\n",
		"no line end",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		u := &upstream{br: bufio.NewReaderSize(bytes.NewReader(input), 4096)}
		total := 0
		for range 100 {
			first, raw, err := u.response()
			if err != nil {
				return
			}
			if total += len(raw); total > maxUpstreamBytes {
				t.Fatalf("%d bytes read before login", total)
			}
			if !bytes.HasPrefix(raw, []byte(first+"\r\n")) {
				t.Fatalf("response %q begins with %q", first, raw)
			}
			if _, lit := trailingLiteral(first); !lit && len(raw) != len(first)+2 {
				t.Fatalf("response %q without a literal is %d bytes", first, len(raw))
			}
			if strings.Count(string(raw), "\r\n") == 0 {
				t.Fatalf("response %q without a line end", raw)
			}
		}
	})
}
