package imap_test

import (
	"encoding/base64"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goimap "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/imap"
	"mailproxy/proxy/proxytest"
)

const message = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice,\r\n.line starting with a dot\r\nbye\r\n"

// The audit stream of one ordinary session is exactly these events.
var sessionEvents = []string{"session.start", "upstream.connect", "upstream.tls", "auth", "session.end"}

func checkAudit(t *testing.T, p *proxytest.Proxy, want []string) {
	t.Helper()
	p.Audit.WaitFor(t, "session.end", 1)
	for id, got := range p.Audit.Sessions(t) {
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("session %s audit events %v, want %v\n%s", id, got, want, p.Audit.String())
		}
	}
	p.Audit.NoSecret(t, password)
}

// TestImapclientThroughProxy drives go-imap's client through mailproxy to
// each kind of upstream: LOGIN, SELECT, FETCH, APPEND, IDLE, LOGOUT.
func TestImapclientThroughProxy(t *testing.T) {
	for _, scheme := range []string{"imaps", "imap"} {
		t.Run(scheme, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startMemProvider(t, pki, scheme, message)
			p := start(t, pki, prov.endpoint)

			exists := make(chan uint32, 4)
			c, err := imapclient.DialInsecure(p.Addr, &imapclient.Options{
				UnilateralDataHandler: &imapclient.UnilateralDataHandler{
					Mailbox: func(d *imapclient.UnilateralDataMailbox) {
						if d.NumMessages != nil {
							exists <- *d.NumMessages
						}
					},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if caps := c.Caps(); !caps.Has("AUTH=PLAIN") || caps.Has(goimap.CapLoginDisabled) || !caps.Has("ID") {
				t.Errorf("pre-login capabilities %v", caps)
			}
			if err := c.Login(user, password).Wait(); err != nil {
				t.Fatalf("login: %v", err)
			}
			// After login the capabilities are the provider's.
			if caps, err := c.Capability().Wait(); err != nil || !caps.Has(goimap.CapIdle) || !caps.Has(goimap.CapMove) {
				t.Errorf("post-login capabilities %v, %v", caps, err)
			}
			sel, err := c.Select("INBOX", nil).Wait()
			if err != nil || sel.NumMessages != 1 {
				t.Fatalf("select: %v %+v", err, sel)
			}
			msgs, err := c.Fetch(goimap.SeqSetNum(1), &goimap.FetchOptions{BodySection: []*goimap.FetchItemBodySection{{}}}).Collect()
			if err != nil || len(msgs) != 1 {
				t.Fatalf("fetch: %v", err)
			}
			for _, b := range msgs[0].BodySection {
				if string(b.Bytes) != message {
					t.Errorf("fetched %q, want %q", b.Bytes, message)
				}
			}
			// APPEND through the relay.
			second := "Subject: second\r\n\r\n" + strings.Repeat("x", 100000) + "\r\n"
			ac := c.Append("INBOX", int64(len(second)), nil)
			io.WriteString(ac, second)
			ac.Close()
			if _, err := ac.Wait(); err != nil {
				t.Fatalf("append: %v", err)
			}
			drain(exists)
			// IDLE: a message arriving at the provider reaches the app.
			idle, err := c.Idle()
			if err != nil {
				t.Fatal(err)
			}
			// go-imap's memory server drops a notification that arrives
			// while its IDLE loop is busy; a second message flushes it.
			got := false
			for attempt := 0; attempt < 5 && !got; attempt++ {
				prov.user.Append("INBOX", literal{strings.NewReader("Subject: third\r\n\r\nhi\r\n")}, &goimap.AppendOptions{})
				select {
				case n := <-exists:
					if n < 3 {
						t.Errorf("EXISTS %d, want 3 or more", n)
					}
					got = true
				case <-time.After(2 * time.Second):
				}
			}
			if !got {
				t.Fatal("no EXISTS during IDLE")
			}
			if err := idle.Close(); err != nil {
				t.Fatal(err)
			}
			if err := idle.Wait(); err != nil {
				t.Fatal(err)
			}
			if err := c.Logout().Wait(); err != nil {
				t.Fatalf("logout: %v", err)
			}
			checkAudit(t, p, sessionEvents)
			end := p.Audit.Find(t, "session.end")[0]
			if up, _ := end["bytes_up"].(float64); up < float64(len(second)) {
				t.Errorf("bytes_up %v does not count the APPEND", end["bytes_up"])
			}
			if down, _ := end["bytes_down"].(float64); down < float64(len(message)) {
				t.Errorf("bytes_down %v does not count the FETCH", end["bytes_down"])
			}
			if ev := p.Audit.Find(t, "auth")[0]; ev["user"] != user || ev["result"] != "ok" {
				t.Errorf("auth event %v", ev)
			}
		})
	}
}

func drain(c chan uint32) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// loginTranscript logs in with a raw transcript and checks the session
// then works (SELECT), whatever the login form.
func loginTranscript(t *testing.T, login func(c *testkit.Conn)) {
	t.Helper()
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps", message)
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN SASL-IR ID] mailproxy ready")
	login(c)
	c.Send("s SELECT INBOX")
	c.ExpectUntil("s OK *")
	c.Send("z LOGOUT")
	c.ExpectUntil("z OK *")
	c.C.Close()
	checkAudit(t, p, sessionEvents)
}

func TestLoginForms(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(password) + `"`
	cases := map[string]func(c *testkit.Conn){
		"LOGIN quoted": func(c *testkit.Conn) {
			c.Send("a1 LOGIN %s %s", user, quoted)
			c.Expect("a1 OK *")
		},
		"LOGIN literals": func(c *testkit.Conn) {
			c.Send("a1 LOGIN {%d}", len(user))
			c.Expect("+ *")
			c.SendRaw(user + " {" + itoa(len(password)) + "}\r\n")
			c.Expect("+ *")
			c.Send("%s", password)
			c.Expect("a1 OK *")
		},
		"LOGIN non-synchronising literal": func(c *testkit.Conn) {
			c.Send("a1 LOGIN \"%s\" {%d+}", user, len(password))
			c.Send("%s", password)
			c.Expect("a1 OK *")
		},
		"AUTHENTICATE PLAIN with SASL-IR": func(c *testkit.Conn) {
			c.Send("a1 AUTHENTICATE PLAIN %s", b64("\x00"+user+"\x00"+password))
			c.Expect("a1 OK *")
		},
		"AUTHENTICATE PLAIN without SASL-IR": func(c *testkit.Conn) {
			c.Send("a1 AUTHENTICATE PLAIN")
			c.Expect("+ ")
			c.Send("%s", b64("\x00"+user+"\x00"+password))
			c.Expect("a1 OK *")
		},
		"AUTHENTICATE LOGIN": func(c *testkit.Conn) {
			c.Send("a1 authenticate login")
			c.Expect("+ " + b64("Username:"))
			c.Send("%s", b64(user))
			c.Expect("+ " + b64("Password:"))
			c.Send("%s", b64(password))
			c.Expect("a1 OK *")
		},
		"AUTHENTICATE LOGIN with initial response": func(c *testkit.Conn) {
			c.Send("a1 AUTHENTICATE LOGIN %s", b64(user))
			c.Expect("+ " + b64("Password:"))
			c.Send("%s", b64(password))
			c.Expect("a1 OK *")
		},
		"cancel, then log in": func(c *testkit.Conn) {
			c.Send("a0 AUTHENTICATE PLAIN")
			c.Expect("+ ")
			c.Send("*")
			c.Expect("a0 BAD *")
			c.Send("a1 LOGIN %s %s", user, quoted)
			c.Expect("a1 OK *")
		},
		"pre-login commands": func(c *testkit.Conn) {
			c.Send("c1 CAPABILITY")
			c.Expect("* CAPABILITY IMAP4rev1 *")
			c.Expect("c1 OK *")
			c.Send("c2 NOOP")
			c.Expect("c2 OK *")
			c.Send("c3 SELECT INBOX")
			c.Expect("c3 BAD *not available before login*")
			c.Send("c4 AUTHENTICATE CRAM-MD5")
			c.Expect("c4 NO *")
			c.Send("c5 STARTTLS")
			c.Expect("c5 BAD *")
			c.Send("c6 LOGIN onlyone")
			c.Expect("c6 BAD *")
			c.Send("c7 LOGIN %s %s", user, quoted)
			c.Expect("c7 OK *")
		},
	}
	for name, login := range cases {
		t.Run(name, func(t *testing.T) { loginTranscript(t, login) })
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestWrongPassword(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN %s wrong-password-123", user)
	c.Expect("a1 NO *")
	// The session stays usable for another attempt.
	c.Send("a2 LOGIN %s wrong-again-456", user)
	c.Expect("a2 NO *")
	c.Send("a3 LOGOUT")
	c.Expect("* BYE *")
	c.Expect("a3 OK *")
	p.Audit.WaitFor(t, "session.end", 1)
	fails := p.Audit.Find(t, "auth")
	if len(fails) != 2 || fails[0]["result"] != "fail" || fails[0]["user"] != user {
		t.Errorf("auth events %v", fails)
	}
	p.Audit.NoSecret(t, "wrong-password-123", "wrong-again-456")
}

func TestPipelinedBehindLogin(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps", message)
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	// The app does not wait for the login's answer.
	c.SendRaw("a1 LOGIN alice {" + itoa(len(password)) + "+}\r\n" + password + "\r\na2 SELECT INBOX\r\na3 FETCH 1 BODY[]\r\na4 LOGOUT\r\n")
	c.Expect("a1 OK *")
	c.ExpectUntil("a2 OK *")
	lines := c.ExpectUntil("a3 OK *")
	if !strings.Contains(strings.Join(lines, "\n"), ".line starting with a dot") {
		t.Errorf("FETCH after pipelined login: %q", lines)
	}
	c.ExpectUntil("a4 OK *")
	c.C.Close()
	checkAudit(t, p, sessionEvents)
}

func TestIDAnsweredLocally(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send(`i1 ID ("name" "Thunderbird" "version" "115.0" "os" "Windows" "host" "ALICE-LAPTOP")`)
	c.Expect("* ID NIL")
	c.Expect("i1 OK *")
	c.Send(`a1 LOGIN alice "%s"`, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(password))
	ok := c.Expect("a1 OK *")
	if strings.Contains(ok, " ID ") {
		t.Errorf("the login reply still offers ID to the app: %q", ok)
	}
	// After login too, as iOS Mail does: the provider answers, but sees
	// NIL instead of the fields.
	c.Send(`i2 ID ("name" "iPhone Mail" "os" "iOS" "host" "ALICES-IPHONE")`)
	c.ExpectUntil("i2 *") // go-imap's server has no ID: BAD, but it saw the command
	c.Send("a2 LOGOUT")
	c.ExpectUntil("a2 OK *")
	c.C.Close()
	p.Audit.WaitFor(t, "session.end", 1)
	if tr := prov.traffic.String(); !strings.Contains(tr, "i2 ID NIL") || strings.Contains(tr, "ALICES-IPHONE") || strings.Contains(tr, "iPhone") {
		t.Errorf("the ID after login reached the provider with its fields")
	}
	if tr := prov.traffic.String(); strings.Contains(tr, "ALICE-LAPTOP") || strings.Contains(tr, "Thunderbird") {
		t.Errorf("the app's ID fields reached the provider")
	}
}

func TestRefusedTLSPolicy(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	provider := proxytest.Provider(pki, "example", prov.endpoint)
	provider.TLS.Roots = nil // system roots: the test CA is not trusted
	p := proxytest.StartProxy(t, imap.Front{}, policy.IMAP, provider, nil)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN alice secret")
	c.Expect("a1 NO [UNAVAILABLE] mailproxy refused the provider (reason: certificate)*")
	logout(c)
	checkAudit(t, p, []string{"session.start", "upstream.connect", "policy.denied", "session.end"})
	if d := p.Audit.Find(t, "policy.denied")[0]; d["reason"] != "certificate" {
		t.Errorf("policy.denied %v", d)
	}
}

func TestProviderClosesMidFetch(t *testing.T) {
	pki := testkit.NewPKI(t)
	endpoint := scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")
		c.Expect("mp1 AUTHENTICATE PLAIN *")
		c.Send("mp1 OK [CAPABILITY IMAP4rev1 IDLE] logged in")
		c.Expect("f1 FETCH 1 BODY[]")
		c.Send("* 1 FETCH (BODY[] {100000}")
		c.SendRaw(strings.Repeat("x", 5000)) // then gone
	})
	p := start(t, pki, endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 AUTHENTICATE PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+password)))
	c.Expect("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in")
	c.Send("f1 FETCH 1 BODY[]")
	c.Expect("* 1 FETCH (BODY[] {100000}")
	start := time.Now()
	c.ExpectClosed(10 * time.Second)
	if time.Since(start) > 5*time.Second {
		t.Errorf("the app waited %v to see the provider gone", time.Since(start))
	}
	p.Audit.WaitFor(t, "session.end", 1)
}

func TestReferralStripped(t *testing.T) {
	pki := testkit.NewPKI(t)
	endpoint := scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")
		c.Expect("mp1 AUTHENTICATE PLAIN *")
		c.Send("mp1 NO [REFERRAL imap://alice;AUTH=*@imap.evil.test/] Try another server")
		c.Expect("mp2 LOGOUT")
	})
	p := start(t, pki, endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 AUTHENTICATE PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+password)))
	got := c.Expect("a1 NO Try another server")
	if strings.Contains(got, "evil") {
		t.Errorf("referral reached the app: %q", got)
	}
	c.Send("a2 LOGOUT")
	c.ExpectUntil("a2 OK *")
	p.Audit.WaitFor(t, "session.end", 1)
	d := p.Audit.Find(t, "policy.denied")
	if len(d) != 1 || d[0]["reason"] != "non_provider_host" || d[0]["host"] != "imap.evil.test" {
		t.Errorf("policy.denied events %v", d)
	}
}

func TestUpstreamLoginFallbacks(t *testing.T) {
	pki := testkit.NewPKI(t)
	// No AUTH=PLAIN: LOGIN, with a synchronising literal for an 8-bit
	// password and a quoted string for the user.
	eightBit := "pässwörd"
	endpoint := scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK ready")
		c.Expect("mp1 CAPABILITY")
		c.Send("* CAPABILITY IMAP4rev1 AUTH=CRAM-MD5")
		c.Send("mp1 OK done")
		c.Expect(`mp2 LOGIN "alice" {10}`)
		c.Send("+ go on")
		c.Expect(eightBit)
		c.Send("mp2 OK logged in")
		c.Expect("x LOGOUT")
		c.Send("* BYE")
		c.Send("x OK bye")
	})
	p := start(t, pki, endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN SASL-IR ID] mailproxy ready")
	c.Send("a1 LOGIN alice {%d+}", len(eightBit))
	c.Send("%s", eightBit)
	c.Expect("a1 OK logged in")
	c.Send("x LOGOUT")
	c.Expect("* BYE")
	c.Expect("x OK bye")

	// LOGINDISABLED and no AUTH=PLAIN: nothing mailproxy can use.
	endpoint = scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=GSSAPI] ready")
		c.Line()
	})
	p = start(t, pki, endpoint)
	c = testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN alice secret")
	c.Expect("a1 NO [UNAVAILABLE] *neither AUTHENTICATE PLAIN nor LOGIN*")
}

func TestProviderGreetings(t *testing.T) {
	pki := testkit.NewPKI(t)
	for greeting, want := range map[string]string{
		"* PREAUTH [CAPABILITY IMAP4rev1] logged in already": "a1 NO [UNAVAILABLE] *PREAUTH*",
		"* BYE go away":    "a1 NO [UNAVAILABLE] *refused the connection*",
		"220 smtp.example": "a1 NO [UNAVAILABLE] *not IMAP*",
	} {
		endpoint := scripted(t, pki, func(c *testkit.Conn) {
			c.Send("%s", greeting)
			c.Line()
		})
		p := start(t, pki, endpoint)
		c := testkit.Dial(t, p.Addr)
		c.Expect("* OK *")
		c.Send("a1 LOGIN alice secret")
		c.Expect(want)
		logout(c)
		end := p.Audit.WaitFor(t, "session.end", 1)
		if end[0]["error"] == nil {
			t.Errorf("%q: session.end does not say why the login failed", greeting)
		}
	}
}

func TestRouteByLoginDomain(t *testing.T) {
	pki := testkit.NewPKI(t)
	provA := startMemProvider(t, pki, "imaps", message)
	a := proxytest.Provider(pki, "a", provA.endpoint)
	a.Domains = []string{"a.test"}
	b := proxytest.Provider(pki, "b", "imaps://127.0.0.1:1")
	b.Domains = []string{"b.test"}
	provA.user = nil
	p := proxytest.StartProxy(t, imap.Front{}, policy.IMAP, nil, []*policy.Provider{a, b})
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN SASL-IR ID] mailproxy ready")
	c.Send("a1 LOGIN nobody@unknown.test secret")
	c.Expect("a1 NO [CONTACTADMIN] *no configured provider serves the login domain \"unknown.test\"*")
	c.Send("a2 LOGIN alice secret")
	c.Expect("a2 NO [CONTACTADMIN] *no provider for this login*")
	c.Send("a3 LOGIN alice@a.test@imap.evil.test secret")
	c.Expect("a3 NO [CONTACTADMIN] *imap.evil.test*")
	c.Send("a4 LOGOUT")
	c.ExpectUntil("a4 OK *")
	p.Audit.WaitFor(t, "session.end", 1)
	d := p.Audit.Find(t, "policy.denied")
	if len(d) != 3 || d[0]["host"] != "unknown.test" || d[2]["host"] != "imap.evil.test" {
		t.Errorf("policy.denied %v", d)
	}
	for _, e := range d {
		if e["reason"] != "non_provider_host" {
			t.Errorf("reason %v", e["reason"])
		}
	}
	if n := len(p.Audit.Find(t, "upstream.connect")); n != 0 {
		t.Errorf("refused logins connected upstream %d times", n)
	}
}

func TestRouteByLoginDomainLogsIn(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	prov.user = nil
	a := proxytest.Provider(pki, "a", prov.endpoint)
	a.Domains = []string{"a.test"}
	p := proxytest.StartProxy(t, imap.Front{}, policy.IMAP, nil, []*policy.Provider{a})
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	// The memory provider knows "alice", not "alice@a.test": the provider
	// is chosen, and its answer comes back.
	c.Send("a1 LOGIN alice@a.test secret")
	c.Expect("a1 NO *")
	c.Send("a2 LOGOUT")
	c.ExpectUntil("a2 OK *")
	c.C.Close()
	checkAudit(t, p, sessionEvents)
}

// TestTooManyArguments: a command before login with more than 100
// arguments and list elements (each costs far more memory than the 2 or 3
// bytes of input it takes) ends the session like any pre-login bound,
// with a limit on record.
func TestTooManyArguments(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	p := start(t, pki, prov.endpoint, func(*proxy.Settings) {})
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("c1 ID (%s)", strings.TrimSpace(strings.Repeat(`"" `, 200)))
	c.Expect("* BYE [LIMIT] *")
	c.ExpectClosed(5 * time.Second)
	p.Audit.WaitFor(t, "session.end", 1)
	if d := p.Audit.Find(t, "policy.denied"); len(d) != 1 || d[0]["reason"] != "limit" || !strings.Contains(d[0]["detail"].(string), "more than 100 arguments") {
		t.Fatalf("policy.denied: %v", d)
	}
}

func TestLimits(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps")
	small := func(st *proxy.Settings) {
		st.Limits.MaxLine = 1024
		st.Limits.MaxLiteral = 2048
		st.Limits.PreauthTimeout = 2 * time.Second
		st.Listen.MaxSessions = 4 // two may wait before login
	}
	p := start(t, pki, prov.endpoint, small)

	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN %s x", strings.Repeat("u", 2000))
	c.Expect("* BYE [LIMIT] *")
	c.ExpectClosed(5 * time.Second)

	c = testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN alice {5000}")
	c.Expect("* BYE [LIMIT] *")
	c.ExpectClosed(5 * time.Second)

	// Two sessions may wait before login (half of max_sessions); the
	// third is turned away.
	p.Audit.WaitFor(t, "session.end", 2)
	c1 := testkit.Dial(t, p.Addr)
	c1.Expect("* OK *")
	c2 := testkit.Dial(t, p.Addr)
	c2.Expect("* OK *")
	c3 := testkit.Dial(t, p.Addr)
	c3.Expect("* BYE [UNAVAILABLE] too many connections*")
	// The two silent ones hit the pre-auth timeout.
	c1.Expect("* BYE Autologout*")
	c2.Expect("* BYE Autologout*")
	p.Audit.WaitFor(t, "session.end", 4)
	limits := 0
	for _, d := range p.Audit.Find(t, "policy.denied") {
		if d["reason"] == "limit" {
			limits++
		}
	}
	if limits != 5 {
		t.Errorf("%d limit events, want 5 (line, literal, sessions, two timeouts):\n%s", limits, p.Audit.String())
	}
}

// TestSilentIdleSurvives keeps an IDLE silent for 70 seconds, longer than
// common 60-second proxy timeouts, and checks the session still works.
func TestSilentIdleSurvives(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 70 seconds")
	}
	t.Parallel()
	pki := testkit.NewPKI(t)
	prov := startMemProvider(t, pki, "imaps", message)
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send(`a1 LOGIN alice "%s"`, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(password))
	c.Expect("a1 OK *")
	c.Send("a2 SELECT INBOX")
	c.ExpectUntil("a2 OK *")
	c.Send("a3 IDLE")
	c.Expect("+ *")
	c.C.SetReadDeadline(time.Now().Add(70 * time.Second))
	buf := make([]byte, 1)
	if n, err := c.BR.Read(buf); n != 0 || err == nil || !isTimeout(err) {
		t.Fatalf("during a silent IDLE: %d bytes, %v", n, err)
	}
	c.Send("DONE")
	c.Expect("a3 OK *")
	c.Send("a4 NOOP")
	c.ExpectUntil("a4 OK *")
}

func isTimeout(err error) bool {
	ne, ok := err.(interface{ Timeout() bool })
	return ok && ne.Timeout()
}

// TestPreTLSTextNeverReachesApp: what a provider says before TLS is not
// vouched for by anyone; it may go to the audit log, never to the app.
func TestPreTLSTextNeverReachesApp(t *testing.T) {
	pki := testkit.NewPKI(t)
	for _, tc := range []struct {
		name, greeting, starttls, want, reason string
	}{
		{"STARTTLS refused", "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready", "b NO [ALERT] visit http://phish.example/",
			"a1 NO [UNAVAILABLE] mailproxy refused the provider (reason: starttls): the server refused STARTTLS", "starttls"},
		{"BYE greeting", "* BYE [ALERT] visit http://phish.example/", "",
			"a1 NO [UNAVAILABLE] the provider refused the connection; try again later", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testkit.Scripted(t, nil, func(c *testkit.Conn) {
				c.Send("%s", tc.greeting)
				if tc.starttls != "" {
					c.Expect("b STARTTLS")
					c.Send("%s", tc.starttls)
				}
				c.Line()
			})
			p := start(t, pki, "imap://"+addr)
			c := testkit.Dial(t, p.Addr)
			c.Expect("* OK *")
			c.Send("a1 LOGIN alice secret")
			got := c.Line()
			if got != tc.want || strings.Contains(got, "phish") {
				t.Errorf("app got %q, want %q", got, tc.want)
			}
			logout(c)
			p.Audit.WaitFor(t, "session.end", 1)
			if !strings.Contains(p.Audit.String(), "phish.example") {
				t.Errorf("the audit log lost what the server said")
			}
			if d := p.Audit.Find(t, "policy.denied"); tc.reason != "" && (len(d) != 1 || d[0]["reason"] != tc.reason) {
				t.Errorf("policy.denied %v", d)
			}
		})
	}
}

// TestNoProviderConnectionBeforeLogin: apps that connect, sit idle, ask
// CAPABILITY and leave cost the provider nothing; a login opens exactly
// one connection.
func TestNoProviderConnectionBeforeLogin(t *testing.T) {
	pki := testkit.NewPKI(t)
	var n atomic.Int32
	endpoint := scripted(t, pki, func(c *testkit.Conn) {
		n.Add(1)
		c.Send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")
		c.Expect("mp1 AUTHENTICATE PLAIN *")
		c.Send("mp1 OK [CAPABILITY IMAP4rev1 IDLE] logged in")
		c.Expect("a2 LOGOUT")
		c.Send("* BYE")
		c.Send("a2 OK bye")
	})
	p := start(t, pki, endpoint)
	for range 5 {
		c := testkit.Dial(t, p.Addr)
		c.Expect("* OK *")
		time.Sleep(20 * time.Millisecond)
		c.Send("a CAPABILITY")
		c.ExpectUntil("a OK *")
		logout(c)
	}
	p.Audit.WaitFor(t, "session.end", 5)
	if got := n.Load(); got != 0 {
		t.Fatalf("the provider saw %d connections from apps that never logged in", got)
	}
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 LOGIN alice secret")
	c.Expect("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in")
	c.Send("a2 LOGOUT")
	c.Expect("* BYE")
	c.Expect("a2 OK bye")
	c.C.Close()
	p.Audit.WaitFor(t, "session.end", 6)
	if got := n.Load(); got != 1 {
		t.Errorf("one login: %d provider connections, want 1", got)
	}
}

// TestAuthzidNeedsPLAIN: an authorization identity is never dropped.
func TestAuthzidNeedsPLAIN(t *testing.T) {
	pki := testkit.NewPKI(t)
	endpoint := scripted(t, pki, func(c *testkit.Conn) {
		c.Send("* OK [CAPABILITY IMAP4rev1] ready") // LOGIN only
		c.Line()
	})
	p := start(t, pki, endpoint)
	c := testkit.Dial(t, p.Addr)
	c.Expect("* OK *")
	c.Send("a1 AUTHENTICATE PLAIN %s", base64.StdEncoding.EncodeToString([]byte("boss\x00alice\x00secret")))
	c.Expect("a1 NO [CANNOT] *authorization identity*")
}

// logout ends a pre-login session the way an app does.
func logout(c *testkit.Conn) {
	c.Send("z LOGOUT")
	c.ExpectUntil("z OK *")
	c.ExpectClosed(5 * time.Second)
}
