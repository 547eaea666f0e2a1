package proxy_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
)

// FuzzPrelogin plays arbitrary bytes as an app before login to the IMAP
// and POP3 fronts (their hand-written command, literal and SASL parsers,
// on the pre-login engine) through a real listener. Whatever arrives, the
// session must end without a panic, within its limits, and nothing may
// reach the provider but a login (there is none to reach: it refuses).
//
//	go test -run '^$' -fuzz FuzzPrelogin -fuzztime 60s ./proxy/
func FuzzPrelogin(f *testing.F) {
	for _, seed := range []string{
		"a CAPABILITY\r\na LOGOUT\r\n",
		"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
		"a LOGIN {4294967296}\r\n",
		"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
		"a AUTHENTICATE LOGIN YWxpY2U=\r\n*\r\n",
		"a ID (\"name\" {3}\r\nabc)\r\n",
		"a LOGIN ((((((((\"x\"))))))))\r\n",
		"a STARTTLS\r\nGARBAGE",
		"CAPA\r\nUSER alice\r\nPASS secret\r\nQUIT\r\n",
		"AUTH PLAIN\r\n=\r\nAUTH LOGIN\r\n*\r\n",
		"\x00\xff\r\n\n\r\n" + strings.Repeat("{", 100),
	} {
		f.Add(true, []byte(seed))
		f.Add(false, []byte(seed))
	}
	pki := testkit.NewPKI(f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	provider := ln.Addr().String()
	ln.Close() // nothing listens: a login fails, after one dial
	small := func(st *proxy.Settings) {
		st.Limits.PreauthTimeout = 2 * time.Second
		st.Limits.MaxPrelogin = 8 << 10
		st.Limits.MaxLine = 1024
		st.Limits.MaxLiteral = 4096
		st.Limits.SessionsPerMinutePerClient = 1e6 // a session per input
	}
	imapProxy := proxytest.StartProxy(f, fronts[0].front, policy.IMAP, proxytest.Provider(pki, "example", "imaps://"+provider), nil, small)
	pop3Proxy := proxytest.StartProxy(f, fronts[1].front, policy.POP3, proxytest.Provider(pki, "example", "pop3s://"+provider), nil, small)
	f.Fuzz(func(t *testing.T, imap bool, input []byte) {
		p := pop3Proxy
		if imap {
			p = imapProxy
		}
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(done) }()
		c.Write(input)
		c.(*net.TCPConn).CloseWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the session did not end within 10 s of the app's input ending")
		}
		if strings.Contains(p.Audit.String(), "internal error") {
			t.Fatalf("a session panicked:\n%s", p.Audit.String())
		}
	})
}
