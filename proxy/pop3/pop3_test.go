package pop3_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/internal/pop3server"
	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/proxytest"
)

// The audit stream of one ordinary session is exactly these events.
var sessionEvents = []string{"session.start", "upstream.connect", "upstream.tls", "auth", "session.end"}

// checkAudit waits for the sessions to end, then checks that each wrote
// exactly want and that no password reached the log.
func checkAudit(t *testing.T, p *proxytest.Proxy, sessions int, want []string) {
	t.Helper()
	p.Audit.WaitFor(t, "session.end", sessions)
	got := p.Audit.Sessions(t)
	if len(got) != sessions {
		t.Errorf("%d sessions in the audit log, want %d", len(got), sessions)
	}
	for id, events := range got {
		if strings.Join(events, " ") != strings.Join(want, " ") {
			t.Errorf("session %s audit events %v, want %v\n%s", id, events, want, p.Audit.String())
		}
	}
	p.Audit.NoSecret(t, password)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// login logs in with USER and PASS.
func login(c *testkit.Conn) {
	c.Send("USER %s", user)
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("+OK Maildrop has 2 messages*")
}

// TestRetrieveAndDelete plays a legacy app through mailproxy to each kind
// of upstream: CAPA, USER/PASS, STAT, LIST, UIDL, RETR and TOP of a
// dot-stuffed message (byte for byte), DELE and QUIT, which must remove
// the message at the provider.
func TestRetrieveAndDelete(t *testing.T) {
	for _, scheme := range []string{"pop3s", "pop3"} {
		t.Run(scheme, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			// Over "pop3" the provider refuses credentials before STLS, so
			// a login that works proves STLS came first.
			prov := startProvider(t, pki, scheme, pop3server.Options{})
			p := start(t, pki, prov.endpoint)
			c := testkit.Dial(t, p.Addr)
			c.Expect("+OK mailproxy ready")
			c.Send("CAPA")
			c.Expect("+OK Capability list follows")
			if got, want := multiline(t, c), "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"; got != want {
				t.Errorf("CAPA before login\n%q, want\n%q", got, want)
			}
			c.Send("STAT")
			c.Expect("-ERR STAT is not available before login*")
			login(c)
			size := len(message) + len(second)
			c.Send("STAT")
			c.Expect(fmt.Sprintf("+OK 2 %d", size))
			c.Send("LIST")
			c.Expect("+OK*")
			if got, want := multiline(t, c), fmt.Sprintf("1 %d\r\n2 %d\r\n.\r\n", len(message), len(second)); got != want {
				t.Errorf("LIST %q, want %q", got, want)
			}
			c.Send("UIDL")
			c.Expect("+OK*")
			if got, want := multiline(t, c), "1 "+prov.uids[0]+"\r\n2 "+prov.uids[1]+"\r\n.\r\n"; got != want {
				t.Errorf("UIDL %q, want %q", got, want)
			}
			c.Send("RETR 1")
			c.Expect(fmt.Sprintf("+OK %d octets", len(message)))
			if got := multiline(t, c); got != messageWire {
				t.Errorf("RETR 1 on the wire\n%q, want\n%q", got, messageWire)
			}
			c.Send("TOP 1 3")
			c.Expect("+OK*")
			if got, want := multiline(t, c), "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice,\r\n..line starting with a dot\r\n..\r\n.\r\n"; got != want {
				t.Errorf("TOP 1 3 on the wire\n%q, want\n%q", got, want)
			}
			// After login CAPA is the provider's own.
			c.Send("CAPA")
			c.Expect("+OK*")
			if got := multiline(t, c); strings.Contains(got, "USER") || !strings.Contains(got, "TOP") {
				t.Errorf("CAPA after login is not the provider's: %q", got)
			}
			c.Send("DELE 1")
			c.Expect("+OK *")
			c.Send("QUIT")
			c.Expect("+OK Bye (1 messages left)")
			c.ExpectClosed(5 * time.Second)
			if got := prov.alice.Messages(); len(got) != 1 || got[0] != prov.uids[1] {
				t.Errorf("after DELE 1 and QUIT the provider holds %v, want [%s]", got, prov.uids[1])
			}
			checkAudit(t, p, 1, sessionEvents)
			if ev := p.Audit.Find(t, "auth")[0]; ev["user"] != user || ev["result"] != "ok" {
				t.Errorf("auth event %v", ev)
			}
			end := p.Audit.Find(t, "session.end")[0]
			if down, _ := end["bytes_down"].(float64); down < float64(len(messageWire)) {
				t.Errorf("bytes_down %v does not count the RETR", end["bytes_down"])
			}
			if _, ok := end["error"]; ok {
				t.Errorf("an orderly session ended with an error: %v", end)
			}
		})
	}
}

// TestLoginForms logs in every way a legacy app may, each after a detour
// that must leave the session usable.
func TestLoginForms(t *testing.T) {
	cases := map[string]func(c *testkit.Conn){
		"USER and PASS": login,
		"AUTH PLAIN with an initial response": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
			c.Expect("+OK Maildrop has 2 messages*")
		},
		"AUTH PLAIN without an initial response, with an authzid": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN")
			c.Expect("+ ")
			c.Send("%s", b64(user+"\x00"+user+"\x00"+password))
			c.Expect("+OK Maildrop has 2 messages*")
		},
		"AUTH PLAIN cancelled, then AUTH LOGIN": func(c *testkit.Conn) {
			c.Send("auth plain")
			c.Expect("+ ")
			c.Send("*")
			c.Expect("-ERR AUTH cancelled")
			c.Send("AUTH LOGIN")
			c.Expect("+ " + b64("Username:"))
			c.Send("%s", b64(user))
			c.Expect("+ " + b64("Password:"))
			c.Send("%s", b64(password))
			c.Expect("+OK Maildrop has 2 messages*")
		},
		"AUTH PLAIN with an empty initial response, then AUTH LOGIN with one": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN =")
			c.Expect("-ERR Malformed SASL response")
			c.Send("AUTH LOGIN %s", b64(user))
			c.Expect("+ " + b64("Password:"))
			c.Send("%s", b64(password))
			c.Expect("+OK Maildrop has 2 messages*")
		},
		"bare AUTH, as Outlook asks, then a challenge mechanism": func(c *testkit.Conn) {
			c.Send("AUTH")
			c.Expect("+OK*")
			c.Expect("PLAIN")
			c.Expect("LOGIN")
			c.Expect(".")
			c.Send("AUTH CRAM-MD5")
			c.Expect("-ERR Unsupported mechanism*")
			c.Send("AUTH PLAIN not-base64!")
			c.Expect("-ERR Malformed SASL response")
			login(c)
		},
		"PASS without USER, NOOP, APOP": func(c *testkit.Conn) {
			c.Send("PASS %s", password)
			c.Expect("-ERR Send USER first")
			c.Send("NOOP")
			c.Expect("+OK")
			c.Send("APOP %s c4c9334bac560ecc979e58001b3e22fb", user)
			c.Expect("-ERR APOP is not offered*")
			c.Send("")
			c.Expect("-ERR *")
			login(c)
		},
	}
	for name, auth := range cases {
		t.Run(name, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startProvider(t, pki, "pop3s", pop3server.Options{})
			p := start(t, pki, prov.endpoint)
			c := testkit.Dial(t, p.Addr)
			c.Expect("+OK mailproxy ready")
			auth(c)
			c.Send("RETR 2")
			c.Expect("+OK *")
			if got := multiline(t, c); got != second+".\r\n" {
				t.Errorf("RETR 2 %q", got)
			}
			c.Send("QUIT")
			c.Expect("+OK Bye*")
			c.ExpectClosed(5 * time.Second)
			checkAudit(t, p, 1, sessionEvents)
		})
	}
}

// TestWrongPassword: the provider's -ERR [AUTH] reaches the app, the
// failure is audited, and the session stays usable for another try on the
// same provider connection.
func TestWrongPassword(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.Send("USER %s", user)
	c.Expect("+OK *")
	c.Send("PASS wrong-password-123")
	c.Expect("-ERR [AUTH] Invalid user name or password")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00wrong-again-456"))
	c.Expect("-ERR [AUTH] Invalid user name or password")
	login(c)
	c.Send("QUIT")
	c.Expect("+OK *")
	c.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 1)
	auths := p.Audit.Find(t, "auth")
	if len(auths) != 3 || auths[0]["result"] != "fail" || auths[1]["result"] != "fail" || auths[2]["result"] != "ok" || auths[0]["user"] != user {
		t.Errorf("auth events %v", auths)
	}
	// One connection per login attempt, none before.
	if n := len(p.Audit.Find(t, "upstream.connect")); n != 3 {
		t.Errorf("%d upstream connections, want 3", n)
	}
	p.Audit.NoSecret(t, password, "wrong-password-123", "wrong-again-456")
}

// TestProviderResponseCodes: [IN-USE], [SYS/TEMP] and [SYS/PERM] from the
// provider reach the app unchanged (RFC 2449 §8, RFC 3206).
func TestProviderResponseCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{pop3server.ErrInUse, "-ERR [IN-USE] Maildrop is locked by another session"},
		{pop3server.ErrSysTemp, "-ERR [SYS/TEMP] Temporary failure, try again later"},
		{pop3server.ErrSysPerm, "-ERR [SYS/PERM] Login not possible, contact the administrator"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			backend := pop3server.BackendFunc(func(string, string) (pop3server.Mailbox, error) { return nil, tc.err })
			prov := startProvider(t, pki, "pop3s", pop3server.Options{Backend: backend})
			p := start(t, pki, prov.endpoint)
			c := testkit.Dial(t, p.Addr)
			c.Expect("+OK *")
			c.Send("USER %s", user)
			c.Expect("+OK *")
			c.Send("PASS %s", password)
			c.Expect(tc.want)
			c.Send("QUIT")
			c.Expect("+OK mailproxy signing off")
			c.ExpectClosed(5 * time.Second)
			checkAudit(t, p, 1, sessionEvents)
			if ev := p.Audit.Find(t, "auth")[0]; ev["result"] != "fail" {
				t.Errorf("auth event %v", ev)
			}
		})
	}
}

// TestMaildropInUse: two apps for one maildrop; the provider's exclusive
// lock (RFC 1939 §8) answers the second with [IN-USE] until the first
// quits.
func TestMaildropInUse(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint)
	first := testkit.Dial(t, p.Addr)
	first.Expect("+OK *")
	login(first)
	second := testkit.Dial(t, p.Addr)
	second.Expect("+OK *")
	second.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	second.Expect("-ERR [IN-USE] *")
	first.Send("QUIT")
	first.Expect("+OK *")
	first.ExpectClosed(5 * time.Second)
	second.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	second.Expect("+OK Maildrop has 2 messages*")
}

// TestPipelinedBehindLogin: commands the app sends without waiting for
// the login's answer reach the provider (RFC 2449 §6.6).
func TestPipelinedBehindLogin(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.SendRaw("USER " + user + "\r\nPASS " + password + "\r\nSTAT\r\nRETR 1\r\nQUIT\r\n")
	c.Expect("+OK Send your password")
	c.Expect("+OK Maildrop has 2 messages*")
	c.Expect("+OK 2 *")
	c.Expect("+OK * octets")
	if got := multiline(t, c); got != messageWire {
		t.Errorf("RETR 1 behind a pipelined login\n%q, want\n%q", got, messageWire)
	}
	c.Expect("+OK Bye*")
	c.ExpectClosed(5 * time.Second)
	checkAudit(t, p, 1, sessionEvents)
}

// TestAPOPNeverOffered: a provider that greets with an APOP timestamp
// (RFC 1939 §7) does not make mailproxy offer one.
func TestAPOPNeverOffered(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{Greeting: "POP3 ready <1896.697170952@pop.example.test>"})
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	if greet := c.Expect("+OK *"); strings.ContainsAny(greet, "<>") {
		t.Errorf("the greeting offers an APOP timestamp: %q", greet)
	}
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); !strings.Contains(got, "\r\nSASL PLAIN LOGIN\r\n") || strings.Contains(got, "CRAM") || strings.Contains(got, "APOP") {
		t.Errorf("CAPA %q", got)
	}
	c.Send("APOP %s c4c9334bac560ecc979e58001b3e22fb", user)
	c.Expect("-ERR APOP is not offered*")
}

// TestProviderExtensions: mailproxy's CAPA follows the provider's, and
// the login upstream uses what the provider has: USER and PASS without
// SASL, AUTH PLAIN without USER, with the initial response after a "+"
// when it would make the line longer than 255 octets (RFC 5034 §4).
func TestProviderExtensions(t *testing.T) {
	long := strings.Repeat("p", 300)
	for _, tc := range []struct {
		name     string
		without  []string
		password string
		capa     string
	}{
		{"no SASL: USER and PASS", []string{"SASL", "PIPELINING", "TOP", "UIDL"}, password,
			"USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"},
		{"no USER: AUTH PLAIN", []string{"USER", "TOP"}, password,
			"USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"},
		{"no USER, long password: AUTH PLAIN after a challenge", []string{"USER"}, long,
			"USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startProvider(t, pki, "pop3", pop3server.Options{Without: tc.without})
			prov.backend.AddUser("bob", tc.password).Add(second)
			p := start(t, pki, prov.endpoint)
			c := testkit.Dial(t, p.Addr)
			c.Expect("+OK *")
			c.Send("CAPA")
			c.Expect("+OK *")
			if got := multiline(t, c); got != tc.capa {
				t.Errorf("CAPA\n%q, want\n%q", got, tc.capa)
			}
			c.Send("USER bob")
			c.Expect("+OK *")
			c.Send("PASS %s", tc.password)
			c.Expect("+OK Maildrop has 1 messages*")
			c.Send("QUIT")
			c.Expect("+OK Bye*")
			c.ExpectClosed(5 * time.Second)
			checkAudit(t, p, 1, sessionEvents)
			p.Audit.NoSecret(t, tc.password)
		})
	}
}

// TestProviderWithoutCAPA: an RFC 1939 provider that knows no CAPA gets
// USER and PASS.
func TestProviderWithoutCAPA(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr := scripted(t, pki, true, func(c *testkit.Conn) {
		c.Send("+OK old server")
		c.Expect("CAPA")
		c.Send("-ERR unknown command")
		c.Expect("USER alice")
		c.Send("+OK")
		c.Expect("PASS " + password)
		c.Send("+OK alice has 0 messages")
		c.Expect("QUIT")
		c.Send("+OK bye")
	})
	p := start(t, pki, "pop3s://"+addr)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.Send("CAPA")
	c.Expect("+OK *")
	if got := multiline(t, c); got != "USER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n" {
		t.Errorf("CAPA %q", got)
	}
	c.Send("AUTH PLAIN %s", b64("\x00alice\x00"+password))
	c.Expect("+OK alice has 0 messages")
	c.Send("QUIT")
	c.Expect("+OK bye")
	c.ExpectClosed(5 * time.Second)
	checkAudit(t, p, 1, sessionEvents)
}

// TestRedialAfterProviderClosed: every login attempt has a connection of
// its own, so a provider that hangs up after a failed login does not fail
// the next one.
func TestRedialAfterProviderClosed(t *testing.T) {
	pki := testkit.NewPKI(t)
	var conns atomic.Int32
	addr := scripted(t, pki, true, func(c *testkit.Conn) {
		n := conns.Add(1)
		c.Send("+OK ready")
		c.Expect("CAPA")
		c.SendRaw("+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n")
		if n == 1 {
			c.Expect("AUTH PLAIN *")
			c.Send("-ERR [AUTH] go away")
			return // and hang up
		}
		c.Expect("AUTH PLAIN " + b64("\x00alice\x00"+password))
		c.Send("+OK welcome")
		c.Expect("QUIT")
		c.Send("+OK bye")
	})
	p := start(t, pki, "pop3s://"+addr)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	c.Send("USER alice")
	c.Expect("+OK *")
	c.Send("PASS wrong-password-123")
	c.Expect("-ERR [AUTH] go away")
	c.Send("USER alice")
	c.Expect("+OK *")
	c.Send("PASS %s", password)
	c.Expect("+OK welcome")
	c.Send("QUIT")
	c.Expect("+OK bye")
	c.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 1)
	if got := len(p.Audit.Find(t, "upstream.connect")); got != 2 {
		t.Errorf("%d upstream connections, want 2", got)
	}
	if a := p.Audit.Find(t, "auth"); len(a) != 2 || a[0]["result"] != "fail" || a[1]["result"] != "ok" {
		t.Errorf("auth events %v", a)
	}
	p.Audit.NoSecret(t, password, "wrong-password-123")
}

// TestProviderGoneMidRetr: the provider vanishes in the middle of a
// message; the app sees its connection end promptly instead of hanging.
func TestProviderGoneMidRetr(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr := scripted(t, pki, true, func(c *testkit.Conn) {
		c.Send("+OK ready")
		c.Expect("CAPA")
		c.SendRaw("+OK\r\nSASL PLAIN\r\n.\r\n")
		c.Expect("AUTH PLAIN *")
		c.Send("+OK logged in")
		c.Expect("RETR 1")
		c.Send("+OK 100000 octets")
		c.SendRaw(strings.Repeat("x", 5000)) // then gone
	})
	p := start(t, pki, "pop3s://"+addr)
	c := testkit.Dial(t, p.Addr)
	c.Expect("+OK *")
	login := func() {
		c.Send("AUTH PLAIN %s", b64("\x00alice\x00"+password))
		c.Expect("+OK logged in")
	}
	login()
	c.Send("RETR 1")
	c.Expect("+OK 100000 octets")
	begin := time.Now()
	c.ExpectClosed(10 * time.Second)
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the app waited %v to see the provider gone", d)
	}
	p.Audit.WaitFor(t, "session.end", 1)
}

// TestProviderUnreachable: mailproxy connects when the app logs in, so a
// provider that is down is a clear -ERR [SYS/TEMP] to the login, and the
// session's end says why.
func TestProviderUnreachable(t *testing.T) {
	pki := testkit.NewPKI(t)
	// A provider that completes the handshake, then hangs up.
	addr := scripted(t, pki, true, func(c *testkit.Conn) { c.C.(*tls.Conn).Handshake() })
	refused := closedPort(t)
	for _, tc := range []struct{ endpoint, want string }{
		{"pop3s://" + refused, "-ERR [SYS/TEMP] mailproxy cannot reach the provider: connecting to " + refused + "*refused*"},
		{"pop3s://" + addr, "-ERR [SYS/TEMP] the provider closed the connection"},
	} {
		p := start(t, pki, tc.endpoint)
		c := testkit.Dial(t, p.Addr)
		c.Expect("+OK mailproxy ready")
		c.Send("USER alice")
		c.Expect("+OK *")
		c.Send("PASS %s", password)
		c.Expect(tc.want)
		c.Send("QUIT")
		c.Expect("+OK *")
		c.ExpectClosed(5 * time.Second)
		p.Audit.WaitFor(t, "session.end", 1)
		if end := p.Audit.Find(t, "session.end")[0]; end["error"] == nil {
			t.Errorf("session.end without the reason: %v", end)
		}
	}
}

// TestRefusedClientIsPermanent: an app outside allow_clients will never be
// served, and POP3 says so ([SYS/PERM], RFC 3206), with the refusal on
// record; a session limit stays [SYS/TEMP].
func TestRefusedClientIsPermanent(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "pop3s", pop3server.Options{})
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) {
		st.Listen.Access = policy.Access{AllowClients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	})
	c := testkit.Dial(t, p.Addr)
	c.Expect("-ERR [SYS/PERM] mailproxy does not serve this address")
	c.ExpectClosed(5 * time.Second)
	if d := p.Audit.WaitFor(t, "policy.denied", 1); d[0]["reason"] != "remote_client" {
		t.Errorf("policy.denied %v, want reason remote_client", d[0])
	}

	var b strings.Builder
	pop3.Front{}.Refuse(&b, policy.ReasonLimit, "too many connections, try again later")
	if b.String() != "-ERR [SYS/TEMP] too many connections, try again later\r\n" {
		t.Errorf("limit refusal %q", b.String())
	}
}
