package pop3

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzUpstreamCapa reads a provider's CAPA answer and the status line
// after it from arbitrary bytes. It must not panic, hold at most
// maxUpstreamLines capabilities, keep every name upper case and on one
// line, and take a status line as success only when it is "+OK".
//
//	go test -run '^$' -fuzz '^FuzzUpstreamCapa$' -fuzztime 60s ./proxy/pop3/
func FuzzUpstreamCapa(f *testing.F) {
	for _, s := range []string{
		"+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\nTOP\r\n.\r\n+OK welcome\r\n",
		"-ERR no CAPA\r\n-ERR [AUTH] no\r\n",
		"+OK\r\n..STUFFED\r\n.\r\n+OKAY\r\n",
		"+OK\r\nsasl plain\r\n\r\n   \r\n.\r\n+ \r\n",
		"+OK\r\nUSER",
		"+OK\r\n" + strings.Repeat("X\r\n", 1001) + ".\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		u := &upstream{br: bufio.NewReaderSize(bytes.NewReader(input), 4096)}
		if err := u.readCapa(); err != nil {
			return
		}
		if len(u.caps) > maxUpstreamLines {
			t.Fatalf("%d capabilities", len(u.caps))
		}
		kept := 0
		for name, args := range u.caps {
			kept += len(name)
			for _, a := range args {
				kept += len(a)
			}
		}
		if kept > maxCapa {
			t.Fatalf("the capabilities keep %d bytes", kept)
		}
		for name := range u.caps {
			if name == "" || name != strings.ToUpper(name) || strings.ContainsAny(name, "\r\n \t") {
				t.Fatalf("capability name %q", name)
			}
		}
		l, err := u.line()
		if err != nil {
			return
		}
		r, err := u.status(l)
		if err != nil {
			return
		}
		if r.ok != isOK(l) || r.line != l {
			t.Fatalf("status %q read as ok=%v", l, r.ok)
		}
		if r.ok && !(l == "+OK" || strings.HasPrefix(l, "+OK ")) {
			t.Fatalf("%q taken as +OK", l)
		}
	})
}

// TestCapaBounded: a CAPA reply whose lines are each short but together
// long is refused rather than kept.
func TestCapaBounded(t *testing.T) {
	long := "+OK\r\n" + strings.Repeat("SASL "+strings.Repeat("M ", 200)+"\r\n", 200) + ".\r\n"
	u := &upstream{br: bufio.NewReaderSize(strings.NewReader(long), 4096)}
	if err := u.readCapa(); err == nil || !strings.Contains(err.Error(), "CAPA reply is over") {
		t.Fatalf("got %v", err)
	}
}
