package pop3server_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
)

const (
	user     = "alice"
	password = "correct horse battery"
	// dotted has lines that start with "." and a line that is only ".":
	// on the wire each gets one more dot (RFC 1939 §3).
	dotted = "From: bob@example.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
	plain  = "Subject: second\r\n\r\nhello\r\n"
)

var dottedWire = "From: bob@example.test\r\nSubject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nend\r\n.\r\n"

// start serves a backend with alice's two messages on plain TCP, with
// opts, and returns the address and alice.
func start(t *testing.T, opts pop3server.Options) (string, *pop3server.MemUser, *pop3server.Server) {
	t.Helper()
	b := pop3server.NewMemBackend()
	u := b.AddUser(user, password)
	u.Add(dotted)
	u.Add(plain)
	if opts.Backend == nil {
		opts.Backend = b
	}
	srv, err := pop3server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), u, srv
}

// multiline reads a multi-line response body up to and including the
// terminating ".", byte for byte.
func multiline(t *testing.T, c *testkit.Conn) string {
	t.Helper()
	var b strings.Builder
	c.C.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := c.BR.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a multi-line response: %v (have %q)", err, b.String())
		}
		b.WriteString(l)
		if l == ".\r\n" {
			return b.String()
		}
	}
}

func TestTransactionAndUpdate(t *testing.T) {
	addr, alice, _ := start(t, pop3server.Options{AllowInsecureAuth: true})
	c := testkit.Dial(t, addr)
	c.Expect("+OK POP3 server ready")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); got != "TOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n.\r\n" {
		t.Errorf("CAPA %q", got)
	}
	c.Send("STAT")
	c.Expect("-ERR *")
	c.Send("USER %s", user)
	c.Expect("+OK *")
	c.Send("PASS %s", password) // spaces belong to the password
	c.Expect(fmt.Sprintf("+OK Maildrop has 2 messages (%d octets)", len(dotted)+len(plain)))
	c.Send("STAT")
	c.Expect(fmt.Sprintf("+OK 2 %d", len(dotted)+len(plain)))
	c.Send("LIST")
	c.Expect("+OK*")
	if got, want := multiline(t, c), fmt.Sprintf("1 %d\r\n2 %d\r\n.\r\n", len(dotted), len(plain)); got != want {
		t.Errorf("LIST %q, want %q", got, want)
	}
	uids := alice.Messages()
	c.Send("UIDL")
	c.Expect("+OK*")
	if got, want := multiline(t, c), "1 "+uids[0]+"\r\n2 "+uids[1]+"\r\n.\r\n"; got != want {
		t.Errorf("UIDL %q, want %q", got, want)
	}
	c.Send("UIDL 2")
	c.Expect("+OK 2 " + uids[1])
	c.Send("RETR 1")
	c.Expect(fmt.Sprintf("+OK %d octets", len(dotted)))
	if got := multiline(t, c); got != dottedWire {
		t.Errorf("RETR 1 on the wire\n%q, want\n%q", got, dottedWire)
	}
	c.Send("TOP 1 2")
	c.Expect("+OK*")
	if got, want := multiline(t, c), "From: bob@example.test\r\nSubject: dots\r\n\r\n..leading dot\r\n...two dots\r\n.\r\n"; got != want {
		t.Errorf("TOP 1 2 %q, want %q", got, want)
	}
	c.Send("TOP 2 0")
	c.Expect("+OK*")
	if got, want := multiline(t, c), "Subject: second\r\n\r\n.\r\n"; got != want {
		t.Errorf("TOP 2 0 %q, want %q", got, want)
	}
	c.Send("RETR 3")
	c.Expect("-ERR *")
	c.Send("DELE 2")
	c.Expect("+OK *")
	c.Send("RSET")
	c.Expect("+OK *")
	c.Send("DELE 1")
	c.Expect("+OK *")
	c.Send("RETR 1")
	c.Expect("-ERR *")
	c.Send("STAT")
	c.Expect(fmt.Sprintf("+OK 1 %d", len(plain)))
	if got := alice.Messages(); len(got) != 2 {
		t.Errorf("DELE removed a message before QUIT: %v", got)
	}
	c.Send("QUIT")
	c.Expect("+OK Bye (1 messages left)")
	c.ExpectClosed(5 * time.Second)
	if got := alice.Messages(); len(got) != 1 || got[0] != uids[1] {
		t.Errorf("after QUIT the maildrop holds %v, want [%s]", got, uids[1])
	}
}

func TestPipelining(t *testing.T) {
	addr, _, _ := start(t, pop3server.Options{AllowInsecureAuth: true})
	c := testkit.Dial(t, addr)
	c.Expect("+OK *")
	c.SendRaw("USER " + user + "\r\nPASS " + password + "\r\nSTAT\r\nNOOP\r\nQUIT\r\n")
	c.Expect("+OK Send your password")
	c.Expect("+OK Maildrop *")
	c.Expect("+OK 2 *")
	c.Expect("+OK")
	c.Expect("+OK Bye*")
}

// A session that ends without QUIT removes nothing (RFC 1939 §6) and
// releases the maildrop.
func TestNoUpdateWithoutQuit(t *testing.T) {
	addr, alice, srv := start(t, pop3server.Options{AllowInsecureAuth: true})
	c := testkit.Dial(t, addr)
	c.Expect("+OK *")
	c.Send("USER %s", user)
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("+OK *")
	c.Send("DELE 1")
	c.Expect("+OK *")
	c.Send("DELE 2")
	c.Expect("+OK *")
	c.C.Close()
	srv.Close() // waits for the session to end
	if got := alice.Messages(); len(got) != 2 {
		t.Errorf("a session without QUIT removed messages: %v", got)
	}
	if alice.Locked() {
		t.Error("the maildrop is still locked after the session ended")
	}
}

func TestSTLSBeforeCredentials(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr, _, _ := start(t, pop3server.Options{TLSConfig: pki.ServerConfig()})
	c := testkit.Dial(t, addr)
	c.Expect("+OK *")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); !strings.Contains(got, "\r\nSTLS\r\n") {
		t.Errorf("CAPA before TLS lacks STLS: %q", got)
	}
	c.Send("USER %s", user)
	c.Expect("-ERR [AUTH] *STLS*")
	c.Send("PASS %s", password)
	c.Expect("-ERR [AUTH] *STLS*")
	c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)))
	c.Expect("-ERR [AUTH] *STLS*")
	c.Send("STLS")
	c.Expect("+OK *")
	tc := tls.Client(c.C, &tls.Config{RootCAs: pki.CA.Pool(), ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = testkit.Wrap(t, tc)
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); strings.Contains(got, "STLS") {
		t.Errorf("CAPA under TLS still offers STLS: %q", got)
	}
	c.Send("STLS")
	c.Expect("-ERR *")
	c.Send("USER %s", user)
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("+OK Maildrop has 2 messages*")
	c.Send("QUIT")
	c.Expect("+OK *")
}

func TestSASL(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cases := map[string]func(c *testkit.Conn){
		"PLAIN with initial response": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
		},
		"PLAIN with a challenge": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN")
			c.Expect("+ ")
			c.Send("%s", b64(user+"\x00"+user+"\x00"+password))
		},
		"PLAIN cancelled, then LOGIN": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN")
			c.Expect("+ ")
			c.Send("*")
			c.Expect("-ERR AUTH cancelled")
			c.Send("AUTH LOGIN")
			c.Expect("+ " + b64("Username:"))
			c.Send("%s", b64(user))
			c.Expect("+ " + b64("Password:"))
			c.Send("%s", b64(password))
		},
		"empty initial response, then bare AUTH": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN =")
			c.Expect("-ERR Malformed SASL response")
			c.Send("AUTH")
			c.Expect("+OK *")
			c.Expect("PLAIN")
			c.Expect("LOGIN")
			c.Expect(".")
			c.Send("AUTH LOGIN %s", b64(user))
			c.Expect("+ " + b64("Password:"))
			c.Send("%s", b64(password))
		},
		"wrong password, then right": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00wrong"))
			c.Expect("-ERR [AUTH] *")
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
		},
	}
	for name, auth := range cases {
		t.Run(name, func(t *testing.T) {
			addr, _, _ := start(t, pop3server.Options{AllowInsecureAuth: true})
			c := testkit.Dial(t, addr)
			c.Expect("+OK *")
			auth(c)
			c.Expect("+OK Maildrop has 2 messages*")
		})
	}
}

func TestResponseCodes(t *testing.T) {
	cases := []struct {
		name    string
		backend pop3server.Backend
		without []string
		want    string
	}{
		{"temporary", failing(pop3server.ErrSysTemp), nil, "-ERR [SYS/TEMP] *"},
		{"permanent", failing(pop3server.ErrSysPerm), nil, "-ERR [SYS/PERM] *"},
		{"unknown backend error", failing(fmt.Errorf("disk on fire")), nil, "-ERR [SYS/TEMP] *"},
		{"in use", failing(pop3server.ErrInUse), nil, "-ERR [IN-USE] *"},
		{"wrong password", failing(pop3server.ErrAuth), nil, "-ERR [AUTH] *"},
		// Without RESP-CODES the server sends no codes (RFC 2449 §8).
		{"no codes", failing(pop3server.ErrSysTemp), []string{"RESP-CODES"}, "-ERR Temporary failure*"},
		{"no AUTH code", failing(pop3server.ErrAuth), []string{"AUTH-RESP-CODE"}, "-ERR Invalid*"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, _ := start(t, pop3server.Options{Backend: tc.backend, AllowInsecureAuth: true, Without: tc.without})
			c := testkit.Dial(t, addr)
			c.Expect("+OK *")
			c.Send("USER %s", user)
			c.Expect("+OK *")
			c.Send("PASS %s", password)
			c.Expect(tc.want)
		})
	}
}

func failing(err error) pop3server.Backend {
	return pop3server.BackendFunc(func(string, string) (pop3server.Mailbox, error) { return nil, err })
}

// The maildrop is exclusive: a second session gets [IN-USE] until the
// first one ends.
func TestInUse(t *testing.T) {
	addr, _, _ := start(t, pop3server.Options{AllowInsecureAuth: true})
	login := func() *testkit.Conn {
		c := testkit.Dial(t, addr)
		c.Expect("+OK *")
		c.Send("USER %s", user)
		c.Expect("+OK *")
		c.Send("PASS %s", password)
		return c
	}
	first := login()
	first.Expect("+OK *")
	second := login()
	second.Expect("-ERR [IN-USE] *")
	first.Send("QUIT")
	first.Expect("+OK *")
	first.ExpectClosed(5 * time.Second)
	second.Send("USER %s", user)
	second.Expect("+OK *")
	second.Send("PASS %s", password)
	second.Expect("+OK *")
}

func TestWithout(t *testing.T) {
	addr, _, _ := start(t, pop3server.Options{AllowInsecureAuth: true, Without: []string{"TOP", "UIDL", "USER", "PIPELINING"}})
	c := testkit.Dial(t, addr)
	c.Expect("+OK *")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); got != "SASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n" {
		t.Errorf("CAPA %q", got)
	}
	c.Send("USER %s", user)
	c.Expect("-ERR *")
	c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)))
	c.Expect("+OK *")
	c.Send("TOP 1 0")
	c.Expect("-ERR *")
	c.Send("UIDL")
	c.Expect("-ERR *")

	if _, err := pop3server.New(pop3server.Options{Backend: pop3server.NewMemBackend(), Without: []string{"APOP"}}); err == nil {
		t.Error("New accepted an unknown capability in Without")
	}
}

// TestLineLengths: a command line over RFC 2449's 255 octets is refused,
// a SASL response after a challenge may be longer (RFC 5034 §4), and a
// line over 8 KiB ends the session.
func TestLineLengths(t *testing.T) {
	b := pop3server.NewMemBackend()
	long := strings.Repeat("p", 300)
	b.AddUser(user, long)
	addr, _, _ := start(t, pop3server.Options{Backend: b, AllowInsecureAuth: true})
	c := testkit.Dial(t, addr)
	c.Expect("+OK *")
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + long))
	c.Send("AUTH PLAIN %s", ir)
	c.Expect("-ERR Command line too long*")
	c.Send("AUTH PLAIN")
	c.Expect("+ ")
	c.Send("%s", ir)
	c.Expect("+OK Maildrop has 0 messages*")
	c.Send("USER %s", strings.Repeat("x", 10000))
	c.Expect("-ERR Line too long")
	c.ExpectClosed(5 * time.Second)
}
