package smtp_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/internal/testkit"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/proxytest"
	"mailproxy/proxy/smtp"
)

// The audit stream of one ordinary session is exactly these events.
var sessionEvents = []string{"session.start", "upstream.connect", "upstream.tls", "auth", "session.end"}

// checkAudit waits for the session to end and checks its events, and that
// no password is in the log.
func checkAudit(t *testing.T, p *proxytest.Proxy, want []string) map[string]any {
	t.Helper()
	end := p.Audit.WaitFor(t, "session.end", 1)[0]
	for id, got := range p.Audit.Sessions(t) {
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("session %s audit events %v, want %v", id, got, want)
		}
	}
	p.Audit.NoSecret(t, password)
	return end
}

// denials returns the policy.denied events, and stops the test when there
// are none.
func denials(t *testing.T, p *proxytest.Proxy) []map[string]any {
	t.Helper()
	d := p.Audit.Find(t, "policy.denied")
	if len(d) == 0 {
		t.Fatal("no policy.denied event")
	}
	return d
}

// number reads a numeric audit field (-1 when absent).
func number(ev map[string]any, key string) int {
	if v, ok := ev[key].(float64); ok {
		return int(v)
	}
	return -1
}

// checkEHLONames fails if the provider saw any EHLO name but the neutral
// one, above all the app's.
func checkEHLONames(t *testing.T, prov *provider) {
	t.Helper()
	names := prov.ehloNames()
	if len(names) == 0 {
		t.Fatal("the provider saw no EHLO")
	}
	for _, n := range names {
		if n != "localhost" {
			t.Errorf("the provider saw EHLO %q, want only \"localhost\"", n)
		}
	}
}

// TestSubmit sends a message with 8-bit and UTF-8 content and dot-stuffed
// lines through mailproxy to each kind of provider endpoint.
func TestSubmit(t *testing.T) {
	for _, scheme := range []string{"smtps", "smtp"} {
		t.Run(scheme, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startProvider(t, pki, scheme)
			p := start(t, pki, prov.endpoint)

			c := testkit.Dial(t, p.Addr)
			ehlo := keywords(greet(c, "alices-laptop.office.example"))
			// The provider is not connected yet: the reply offers
			// max_message_size (64 MiB) and what most providers have.
			for _, want := range []string{"SIZE 67108864", "SMTPUTF8", "8BITMIME", "AUTH PLAIN LOGIN"} {
				if !slices.Contains(ehlo, want) {
					t.Errorf("EHLO reply %q lacks %q", ehlo, want)
				}
			}
			for _, l := range ehlo {
				if strings.Contains(l, "BINARYMIME") || strings.Contains(l, "STARTTLS") {
					t.Errorf("EHLO reply offers %q", l)
				}
			}
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
			c.Expect("235 2.0.0 *")
			c.Send("MAIL FROM:<jörg@example.test> SMTPUTF8 BODY=8BITMIME")
			c.Expect("250 *")
			c.Send("RCPT TO:<bob@example.test>")
			c.Expect("250 *")
			c.Send("RCPT TO:<zoë@example.test>")
			c.Expect("250 *")
			c.Send("DATA")
			c.Expect("354 *")
			c.SendRaw(dotStuff(message))
			c.Expect("250 2.0.0 Ok: queued as Q1234") // the provider's own reply
			quit(c)

			got := prov.received()
			if len(got) != 1 {
				t.Fatalf("the provider received %d messages, want 1", len(got))
			}
			m := got[0]
			if string(m.data) != message {
				t.Errorf("the provider received\n%q\nwant\n%q", m.data, message)
			}
			if m.from != "jörg@example.test" || !m.opts.UTF8 || m.opts.Body != gosmtp.Body8BitMIME {
				t.Errorf("envelope from %q, options %+v", m.from, m.opts)
			}
			if !slices.Equal(m.to, []string{"bob@example.test", "zoë@example.test"}) {
				t.Errorf("recipients %q", m.to)
			}
			checkEHLONames(t, prov)
			if a := prov.authsSeen(); len(a) != 1 || !a[0].tls || !a[0].ok || a[0].mech != "PLAIN" {
				t.Errorf("provider AUTH %+v, want one PLAIN login under TLS", a)
			}
			end := checkAudit(t, p, sessionEvents)
			if number(end, "messages") != 1 || number(end, "recipients") != 2 {
				t.Errorf("session.end %v, want messages 1 and recipients 2", end)
			}
			if _, ok := end["error"]; ok {
				t.Errorf("session.end has an error: %v", end["error"])
			}
			if ev := p.Audit.Find(t, "auth")[0]; ev["user"] != user || ev["result"] != "ok" {
				t.Errorf("auth event %v", ev)
			}
		})
	}
}

// TestWrongPassword: the provider's 535 reaches the app and is audited; the
// app may then try again on the same session.
func TestWrongPassword(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	greet(c, "pc")
	const wrong = "not-the-password"
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+wrong))
	c.Expect("535 5.7.8 Authentication failed")
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("530 5.7.0 *")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("235 *")
	quit(c)

	p.Audit.WaitFor(t, "session.end", 1)
	var results []any
	for _, ev := range p.Audit.Find(t, "auth") {
		if ev["user"] != user {
			t.Errorf("auth event for user %v", ev["user"])
		}
		results = append(results, ev["result"])
	}
	if fmt.Sprint(results) != "[fail ok]" {
		t.Errorf("auth results %v, want [fail ok]", results)
	}
	p.Audit.NoSecret(t, password, wrong)
	// One connection per login attempt, none before.
	if n := prov.conns.Load(); n != 2 {
		t.Errorf("the provider saw %d connections, want 2", n)
	}
}

// TestRecipientRefused: each RCPT gets the provider's own answer; the
// message reaches the recipients it accepted.
func TestRecipientRefused(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	prov.set(func(p *provider) {
		p.reject = map[string]*gosmtp.SMTPError{
			"carol@example.test": {Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "carol: no such mailbox here"},
		}
	})
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("RCPT TO:<carol@example.test>")
	c.Expect("550 5.1.1 carol: no such mailbox here")
	c.Send("RCPT TO:<dave@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff(message))
	c.Expect("250 *")
	quit(c)

	got := prov.received()
	if len(got) != 1 || !slices.Equal(got[0].to, []string{"bob@example.test", "dave@example.test"}) {
		t.Fatalf("the provider received %+v, want one message to bob and dave", got)
	}
	end := checkAudit(t, p, sessionEvents)
	if number(end, "messages") != 1 || number(end, "recipients") != 2 {
		t.Errorf("session.end %v, want messages 1 and recipients 2", end)
	}
}

// TestMessageRefused: the provider's 552 for the message reaches the app,
// never a 250; the session goes on and the next message is taken.
func TestMessageRefused(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	prov.set(func(p *provider) {
		p.dataErr = &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"}
	})
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	login(c)
	send := func(want string) {
		t.Helper()
		c.Send("MAIL FROM:<%s>", user)
		c.Expect("250 *")
		c.Send("RCPT TO:<bob@example.test>")
		c.Expect("250 *")
		c.Send("DATA")
		c.Expect("354 *")
		c.SendRaw(dotStuff(message))
		c.Expect(want)
	}
	send("552 5.2.2 Mailbox full")
	prov.set(func(p *provider) { p.dataErr = nil })
	send("250 *")
	quit(c)
	if got := prov.received(); len(got) != 1 {
		t.Errorf("the provider kept %d messages, want 1", len(got))
	}
	end := checkAudit(t, p, sessionEvents)
	if number(end, "messages") != 1 || number(end, "recipients") != 1 {
		t.Errorf("session.end %v, want only the accepted message counted", end)
	}
}

// TestProviderVanishes: a provider that drops the connection during the
// message gives the app a 4xx, never 250, and the session then ends.
func TestProviderVanishes(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	prov.set(func(p *provider) { p.dropAt = 64 << 10 })
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 78)+"\r\n", 20000) // 1.6 MB
	c.SendRaw(dotStuff(big))
	c.Expect("451 4.4.0 *")
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("421 4.4.0 *")
	c.ExpectClosed(5 * time.Second)
	if got := prov.received(); len(got) != 0 {
		t.Errorf("the provider kept %d messages", len(got))
	}
	end := checkAudit(t, p, sessionEvents)
	if e, _ := end["error"].(string); !strings.Contains(e, "provider") {
		t.Errorf("session.end error %q does not say the provider failed", e)
	}
}

// TestMailBeforeAuth: nothing is relayed before AUTH.
func TestMailBeforeAuth(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	greet(c, "pc")
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("530 5.7.0 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("502 *") // no transaction open
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("530 5.7.0 *")
	quit(c)
	// The probe is on record, once however often it tries.
	checkAudit(t, p, []string{"session.start", "policy.denied", "session.end"})
	if d := denials(t, p); d[0]["reason"] != "input" {
		t.Errorf("denied event %v, want reason input", d[0])
	}
	if n := prov.conns.Load(); n != 0 {
		t.Errorf("the provider saw %d connections before any AUTH", n)
	}
}

// TestMalformedAuth: AUTH responses mailproxy or go-smtp refuse before
// asking the provider are audited (reason input), and ask nothing of it.
func TestMalformedAuth(t *testing.T) {
	cases := map[string]struct {
		send  func(c *testkit.Conn)
		reply string
	}{
		"PLAIN without a user name": {func(c *testkit.Conn) { c.Send("AUTH PLAIN %s", b64("\x00\x00"+password)) }, "501 5.5.2 *"},
		"LOGIN without a user name": {func(c *testkit.Conn) {
			c.Send("AUTH LOGIN")
			c.Expect("334 *")
			c.Send("")
			c.Expect("334 *")
			c.Send("%s", b64(password))
		}, "501 5.5.2 *"},
		"PLAIN not three parts": {func(c *testkit.Conn) { c.Send("AUTH PLAIN %s", b64("no separators")) }, "454 4.7.0 *"},
		"not base64":            {func(c *testkit.Conn) { c.Send("AUTH PLAIN !!!") }, "454 4.7.0 Invalid base64 data"},
	}
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := start(t, pki, prov.endpoint)
			c := testkit.Dial(t, p.Addr)
			greet(c, "pc")
			tc.send(c)
			c.Expect(tc.reply)
			quit(c)
			checkAudit(t, p, []string{"session.start", "policy.denied", "session.end"})
			if d := denials(t, p); d[0]["reason"] != "input" {
				t.Errorf("denied event %v, want reason input", d[0])
			}
		})
	}
	// However often an app tries, the log holds a bounded number of
	// refusals: the fifth ends the session.
	t.Run("repeated", func(t *testing.T) {
		p := start(t, pki, prov.endpoint)
		c := testkit.Dial(t, p.Addr)
		greet(c, "pc")
		for range 5 {
			c.Send("AUTH PLAIN !!!")
			c.Expect("454 4.7.0 *")
		}
		c.ExpectClosed(5 * time.Second)
		checkAudit(t, p, []string{"session.start", "policy.denied", "policy.denied", "policy.denied", "policy.denied", "policy.denied", "policy.denied", "session.end"})
		if d := denials(t, p); d[len(d)-1]["reason"] != "limit" {
			t.Errorf("last denied event %v, want reason limit", d[len(d)-1])
		}
	})
	if n := prov.conns.Load(); n != 0 {
		t.Errorf("the provider saw %d connections", n)
	}
}

// TestRecipientsLimit: max_recipients is a 452 per extra recipient and one
// audited limit; the message goes to the recipients within the limit.
func TestRecipientsLimit(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.MaxRecipients = 2 })
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	for _, r := range []string{"a", "b"} {
		c.Send("RCPT TO:<%s@example.test>", r)
		c.Expect("250 *")
	}
	for _, r := range []string{"c", "d"} {
		c.Send("RCPT TO:<%s@example.test>", r)
		c.Expect("452 4.5.3 *")
	}
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff(message))
	c.Expect("250 *")
	quit(c)
	if got := prov.received(); len(got) != 1 || !slices.Equal(got[0].to, []string{"a@example.test", "b@example.test"}) {
		t.Errorf("the provider received %+v", got)
	}
	checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
	if d := denials(t, p); d[0]["reason"] != "limit" {
		t.Errorf("denied event %v, want reason limit", d[0])
	}
}

// TestSizeLimit: the SIZE offered is max_message_size when that is
// smaller than the provider's; a larger message is refused with 552 and
// audited, and never reaches the provider.
func TestSizeLimit(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.MaxMessageSize = 4096 })
	c := testkit.Dial(t, p.Addr)
	if ehlo := keywords(greet(c, "pc")); !slices.Contains(ehlo, "SIZE 4096") {
		t.Errorf("EHLO reply %q does not offer SIZE 4096", ehlo)
	}
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("235 *")
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 70)+"\r\n", 1000)))
	c.Expect("552 5.3.4 *")
	// The provider connection was cut to drop the partial message.
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("421 4.4.0 *(the app's message was cut short)*")
	c.ExpectClosed(5 * time.Second)
	if got := prov.received(); len(got) != 0 {
		t.Errorf("the provider kept %d messages", len(got))
	}
	end := checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
	if d := denials(t, p); d[0]["reason"] != "limit" {
		t.Errorf("denied event %v, want reason limit", d[0])
	}
	if e, _ := end["error"].(string); !strings.Contains(e, "larger than 4096 bytes") {
		t.Errorf("session.end error %q", e)
	}
}

// TestSizeAnnounced: MAIL with a SIZE= over the SIZE offered is refused
// by go-smtp itself; the refusal is audited, and the session goes on.
func TestSizeAnnounced(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.MaxMessageSize = 4096 })
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s> SIZE=999999999", user)
	c.Expect("552 5.3.4 *")
	c.Send("MAIL FROM:<%s> SIZE=100", user)
	c.Expect("250 *")
	quit(c)
	end := checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
	if d := denials(t, p); d[0]["reason"] != "limit" || !strings.Contains(d[0]["detail"].(string), "4096") {
		t.Errorf("denied event %v, want reason limit", d[0])
	}
	if e, ok := end["error"]; ok {
		t.Errorf("session.end error %q: the session went on", e)
	}
}

// TestSizeLimitBDAT: BDAT chunks whose total goes over the SIZE offered
// are refused by go-smtp itself, and audited. Before the message has
// started at the provider, the session goes on; after, the provider
// connection went with the partial message, and session.end says why.
func TestSizeLimitBDAT(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started %v", started), func(t *testing.T) {
			p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.MaxMessageSize = 4096 })
			c := testkit.Dial(t, p.Addr)
			login(c)
			c.Send("MAIL FROM:<%s>", user)
			c.Expect("250 *")
			c.Send("RCPT TO:<bob@example.test>")
			c.Expect("250 *")
			first := "" // go-smtp's Data runs, nothing reached the provider
			if started {
				first = "Subject: big\r\n\r\nbody\r\n" // the header block ended: DATA started
			}
			c.SendRaw(fmt.Sprintf("BDAT %d\r\n%s", len(first), first))
			c.Expect("250 *")
			big := strings.Repeat("z", 5000)
			c.SendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(big), big))
			c.Expect("552 5.3.4 *")
			c.Send("MAIL FROM:<%s>", user)
			if started {
				c.Expect("421 4.4.0 *(the app's message was cut short)*")
				c.ExpectClosed(5 * time.Second)
			} else {
				c.Expect("250 *")
				quit(c)
			}
			end := checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
			if d := denials(t, p); d[0]["reason"] != "limit" {
				t.Errorf("denied event %v, want reason limit", d[0])
			}
			e, _ := end["error"].(string)
			if started && !strings.Contains(e, "larger than 4096 bytes") || !started && e != "" {
				t.Errorf("session.end error %q", e)
			}
		})
	}
	if got := prov.received(); len(got) != 0 {
		t.Errorf("the provider kept %d messages", len(got))
	}
}

// TestLongLine: a message line over the line limit is refused and
// audited, and never reaches the provider.
func TestLongLine(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.MaxLine = 4000 })
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff("Subject: long\r\n\r\n" + strings.Repeat("w", 5000) + "\r\n"))
	c.Expect("554 5.6.0 a line of the message is longer than 4000 bytes*")
	c.ExpectUntil("500 5.4.0 *") // go-smtp then closes the connection
	c.ExpectClosed(5 * time.Second)
	if got := prov.received(); len(got) != 0 {
		t.Errorf("the provider kept %d messages", len(got))
	}
	end := checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
	if e, _ := end["error"].(string); !strings.Contains(e, "limit") {
		t.Errorf("session.end error %q", e)
	}
}

// TestPlaintextAuthRefused: on a listener that may not take a password in
// plaintext (one with allow_clients), AUTH is neither offered nor taken
// before STARTTLS, and works after it.
func TestPlaintextAuthRefused(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, func(st *proxy.Settings) {
		st.Listen.Access.AllowClients = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		st.Listen.LocalSecurity = proxy.LocalSTARTTLS
		st.LocalTLS = pki.ServerConfig()
	})
	c := testkit.Dial(t, p.Addr)
	ehlo := keywords(greet(c, "pc"))
	if !slices.Contains(ehlo, "STARTTLS") || slices.ContainsFunc(ehlo, func(k string) bool { return strings.HasPrefix(k, "AUTH") }) {
		t.Errorf("EHLO reply before TLS %q, want STARTTLS and no AUTH", ehlo)
	}
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("523 5.7.10 *")
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("530 5.7.0 *")
	quit(c)
	if a := prov.authsSeen(); len(a) != 0 {
		t.Errorf("the provider saw %d logins from a plaintext AUTH", len(a))
	}
	// The refusal is on record.
	if d := p.Audit.WaitFor(t, "policy.denied", 1); d[0]["reason"] != "plaintext_auth" {
		t.Errorf("policy.denied %v, want reason plaintext_auth", d[0])
	}

	roots := x509.NewCertPool()
	roots.AddCert(pki.CA.Cert)
	app, err := gosmtp.DialStartTLS(p.Addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.Auth(saslPlain()); err != nil {
		t.Fatalf("AUTH after STARTTLS: %v", err)
	}
	if err := app.Quit(); err != nil {
		t.Fatal(err)
	}
	p.Audit.WaitFor(t, "session.end", 2)
	p.Audit.NoSecret(t, password)
}

// TestTLSPolicyRefusal: a provider whose certificate does not verify is
// refused with one audit event, and the app is told why.
func TestTLSPolicyRefusal(t *testing.T) {
	pki := testkit.NewPKI(t)
	untrusted := testkit.NewPKI(t) // another CA: its certificate will not verify
	prov := startProvider(t, untrusted, "smtps")

	t.Run("fixed provider", func(t *testing.T) {
		p := start(t, pki, prov.endpoint)
		c := testkit.Dial(t, p.Addr)
		greet(c, "pc")
		c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
		c.Expect("454 4.7.0 mailproxy refused the provider (reason: certificate)*")
		quit(c)
		checkAudit(t, p, []string{"session.start", "upstream.connect", "policy.denied", "session.end"})
		if d := denials(t, p); d[0]["reason"] != "certificate" {
			t.Errorf("denied event %v, want reason certificate", d[0])
		}
	})
	t.Run("provider by login domain", func(t *testing.T) {
		p := proxytest.StartProxy(t, smtp.Front{}, policy.SMTP, nil, []*policy.Provider{proxytest.Provider(pki, "example", prov.endpoint)})
		c := testkit.Dial(t, p.Addr)
		greet(c, "pc")
		c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
		c.Expect("454 4.7.0 mailproxy refused the provider (reason: certificate)*")
		quit(c)
		checkAudit(t, p, []string{"session.start", "upstream.connect", "policy.denied", "session.end"})
	})
	if a := prov.authsSeen(); len(a) != 0 {
		t.Errorf("the untrusted provider saw %d logins", len(a))
	}
}

// TestPreTLSWordsStayOut: what a STARTTLS provider says before TLS is
// nobody's word (RFC 3207 §4.2); the app hears why mailproxy gave up, never
// that text.
func TestPreTLSWordsStayOut(t *testing.T) {
	const words = "PRE-TLS WORDS"
	cases := []struct {
		name   string
		script func(c *testkit.Conn)
		want   string
	}{
		{"refusing greeting", func(c *testkit.Conn) {
			c.Send("554 5.7.1 %s", words)
		}, "454 4.4.0 the provider refused the connection*"},
		{"STARTTLS refused", func(c *testkit.Conn) {
			c.Send("220 provider.test ESMTP")
			c.Expect("EHLO localhost")
			c.Send("250-provider.test %s", words)
			c.Send("250 STARTTLS")
			c.Expect("STARTTLS")
			c.Send("454 4.7.0 %s", words)
		}, "454 4.7.0 mailproxy refused the provider (reason: starttls)*"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pki := testkit.NewPKI(t)
			addr := testkit.Scripted(t, nil, tc.script)
			p := start(t, pki, "smtp://"+addr)
			c := testkit.Dial(t, p.Addr)
			greet(c, "pc")
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
			if got := c.Expect(tc.want); strings.Contains(got, words) {
				t.Errorf("the app was told %q", got)
			}
			quit(c)
			end := p.Audit.WaitFor(t, "session.end", 1)
			// The audit log, unlike the app, keeps what was said.
			if e, _ := end[0]["error"].(string); e == "" {
				t.Errorf("session.end has no error: the failed login is unexplained")
			}
		})
	}
}

// TestRouteByLoginDomain: on a "*" listener AUTH picks the provider by the
// login's domain.
func TestRouteByLoginDomain(t *testing.T) {
	pki := testkit.NewPKI(t)
	ex := startProvider(t, pki, "smtps")
	other := startProvider(t, pki, "smtp")
	other.set(func(p *provider) { p.user = "bob@other.test" })
	p := proxytest.StartProxy(t, smtp.Front{}, policy.SMTP, nil,
		[]*policy.Provider{proxytest.Provider(pki, "example", ex.endpoint), proxytest.Provider(pki, "other", other.endpoint)})

	c := testkit.Dial(t, p.Addr)
	ehlo := keywords(greet(c, "pc"))
	if !slices.Contains(ehlo, "SIZE 67108864") {
		t.Errorf("EHLO reply before the provider is known %q, want SIZE 64 MiB", ehlo)
	}
	c.Send("AUTH PLAIN %s", b64("\x00eve@nowhere.test\x00"+password))
	c.Expect("535 5.7.8 *no configured provider serves the login domain*")
	c.Send("AUTH PLAIN %s", b64("\x00bob@other.test\x00"+password))
	c.Expect("235 *")
	c.Send("MAIL FROM:<bob@other.test>")
	c.Expect("250 *")
	c.Send("RCPT TO:<alice@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff(message))
	c.Expect("250 *")
	quit(c)

	if n := len(other.received()); n != 1 {
		t.Errorf("the provider of other.test received %d messages, want 1", n)
	}
	if n := ex.conns.Load(); n != 0 {
		t.Errorf("the provider of example.test saw %d connections, want 0", n)
	}
	checkEHLONames(t, other)
	checkAudit(t, p, []string{"session.start", "policy.denied", "upstream.connect", "upstream.tls", "auth", "session.end"})
	if d := denials(t, p); d[0]["reason"] != "non_provider_host" || d[0]["host"] != "nowhere.test" {
		t.Errorf("denied event %v", d[0])
	}
}

// TestTransactions: one provider connection serves several messages; an
// RSET in between is passed on, so that the next message's envelope is its
// own.
func TestTransactions(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtp")
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<abandoned@example.test>")
	c.Expect("250 *")
	c.Send("RSET")
	c.Expect("250 *")
	for i := range 3 {
		c.Send("MAIL FROM:<%s>", user)
		c.Expect("250 *")
		c.Send("RCPT TO:<r%d@example.test>", i)
		c.Expect("250 *")
		c.Send("DATA")
		c.Expect("354 *")
		c.SendRaw(dotStuff(message))
		c.Expect("250 *")
	}
	quit(c)
	got := prov.received()
	if len(got) != 3 {
		t.Fatalf("the provider received %d messages, want 3", len(got))
	}
	for i, m := range got {
		if want := fmt.Sprintf("r%d@example.test", i); !slices.Equal(m.to, []string{want}) {
			t.Errorf("message %d went to %q, want only %s", i, m.to, want)
		}
	}
	if n := prov.conns.Load(); n != 1 {
		t.Errorf("the provider saw %d connections, want 1", n)
	}
	end := checkAudit(t, p, sessionEvents)
	if number(end, "messages") != 3 || number(end, "recipients") != 3 {
		t.Errorf("session.end %v, want 3 messages and 3 recipients", end)
	}
}

// TestBDAT: CHUNKING from the app (RFC 3030) reaches the provider as DATA,
// byte for byte, dot-leading lines included.
func TestBDAT(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint)
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	half := len(message) / 2
	c.SendRaw(fmt.Sprintf("BDAT %d\r\n%s", half, message[:half]))
	c.Expect("250 *")
	c.SendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(message)-half, message[half:]))
	c.Expect("250 2.0.0 Ok: queued as Q1234")
	quit(c)
	if got := prov.received(); len(got) != 1 || string(got[0].data) != message {
		t.Errorf("the provider received %+v, want the message as sent", got)
	}
	checkAudit(t, p, sessionEvents)
}

// TestAuthMechanisms: the app may log in with PLAIN (with or without an
// initial response) or LOGIN (with or without one); a provider that offers
// only LOGIN is logged in with LOGIN.
func TestAuthMechanisms(t *testing.T) {
	cases := map[string]func(c *testkit.Conn){
		"PLAIN with initial response": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
		},
		"PLAIN without initial response": func(c *testkit.Conn) {
			c.Send("AUTH PLAIN")
			c.Expect("334 ")
			c.Send("%s", b64("\x00"+user+"\x00"+password))
		},
		"LOGIN": func(c *testkit.Conn) {
			c.Send("AUTH LOGIN")
			c.Expect("334 " + b64("Username:"))
			c.Send("%s", b64(user))
			c.Expect("334 " + b64("Password:"))
			c.Send("%s", b64(password))
		},
		"LOGIN with initial response": func(c *testkit.Conn) {
			c.Send("auth login %s", b64(user))
			c.Expect("334 " + b64("Password:"))
			c.Send("%s", b64(password))
		},
	}
	for name, auth := range cases {
		for _, mech := range []string{"PLAIN", "LOGIN"} {
			t.Run(name+" to a provider with "+mech, func(t *testing.T) {
				pki := testkit.NewPKI(t)
				prov := startProvider(t, pki, "smtps")
				prov.set(func(p *provider) { p.mechs = []string{mech} })
				p := start(t, pki, prov.endpoint)
				c := testkit.Dial(t, p.Addr)
				greet(c, "pc")
				auth(c)
				c.Expect("235 *")
				quit(c)
				if a := prov.authsSeen(); len(a) != 1 || a[0].mech != mech || !a[0].ok {
					t.Errorf("provider AUTH %+v, want one %s login", a, mech)
				}
				checkAudit(t, p, sessionEvents)
			})
		}
	}
}

// TestLocalTLS: the app's side may be STARTTLS (RFC 3207) or TLS from the
// first byte; go-smtp's client is the app here.
func TestLocalTLS(t *testing.T) {
	for _, mode := range []proxy.LocalSecurity{proxy.LocalSTARTTLS, proxy.LocalTLS} {
		t.Run(string(mode), func(t *testing.T) {
			pki := testkit.NewPKI(t)
			prov := startProvider(t, pki, "smtps")
			local := func(st *proxy.Settings) {
				st.Listen.LocalSecurity = mode
				st.LocalTLS = pki.ServerConfig()
			}
			p := start(t, pki, prov.endpoint, local)
			roots := x509.NewCertPool()
			roots.AddCert(pki.CA.Cert)
			tc := &tls.Config{RootCAs: roots, ServerName: "localhost"}
			var app *gosmtp.Client
			var err error
			if mode == proxy.LocalTLS {
				app, err = gosmtp.DialTLS(p.Addr, tc)
			} else {
				// Before TLS: STARTTLS is offered, and AUTH too, as
				// the listener is on loopback.
				c := testkit.Dial(t, start(t, pki, prov.endpoint, local).Addr)
				if ehlo := keywords(greet(c, "pc")); !slices.Contains(ehlo, "STARTTLS") || !slices.Contains(ehlo, "AUTH PLAIN LOGIN") {
					t.Errorf("EHLO reply %q, want STARTTLS and AUTH", ehlo)
				}
				quit(c)
				app, err = gosmtp.DialStartTLS(p.Addr, tc)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			if _, ok := app.TLSConnectionState(); !ok {
				t.Fatal("the app's connection is not TLS")
			}
			if ok, _ := app.Extension("STARTTLS"); ok {
				t.Error("STARTTLS offered under TLS")
			}
			if err := app.Auth(saslPlain()); err != nil {
				t.Fatalf("AUTH: %v", err)
			}
			if err := app.SendMail(user, []string{"bob@example.test"}, strings.NewReader(message)); err != nil {
				t.Fatalf("sending: %v", err)
			}
			if err := app.Quit(); err != nil {
				t.Fatal(err)
			}
			if got := prov.received(); len(got) != 1 || string(got[0].data) != message {
				t.Errorf("the provider received %+v", got)
			}
			checkAudit(t, p, sessionEvents)
		})
	}
}

// TestTimeouts: an app that does not log in within preauth_timeout, or
// goes quiet for command_timeout, gets 421 and an audited limit.
func TestTimeouts(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	t.Run("before login", func(t *testing.T) {
		const preauth = time.Second
		p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.PreauthTimeout = preauth })
		began := time.Now()
		c := testkit.Dial(t, p.Addr)
		// The EHLO reply may or may not come before the 421, however
		// slow the machine: the deadline runs from the connection.
		c.Expect("220 *")
		c.Send("EHLO pc")
		lines := c.ExpectUntil("421 4.4.2 *")
		for _, l := range lines[:len(lines)-1] {
			if !strings.HasPrefix(l, "250") {
				t.Errorf("before the 421: %q", l)
			}
		}
		if d := time.Since(began); d < preauth {
			t.Errorf("421 after %v, before preauth_timeout (%v)", d, preauth)
		}
		c.ExpectClosed(5 * time.Second)
		end := checkAudit(t, p, []string{"session.start", "policy.denied", "session.end"})
		if e, _ := end["error"].(string); !strings.Contains(e, "preauth_timeout") {
			t.Errorf("session.end error %q", e)
		}
	})
	t.Run("during the message", func(t *testing.T) {
		// command_timeout also bounds the provider's greeting, EHLO and
		// AUTH, and the login: 3 s leaves those room on a loaded machine.
		const timeout = 3 * time.Second
		p := start(t, pki, prov.endpoint, func(st *proxy.Settings) { st.Limits.CommandTimeout = timeout })
		c := testkit.Dial(t, p.Addr)
		login(c)
		c.Send("MAIL FROM:<%s>", user)
		c.Expect("250 *")
		c.Send("RCPT TO:<bob@example.test>")
		c.Expect("250 *")
		c.Send("DATA")
		c.Expect("354 *")
		silent := time.Now() // the proxy's last read starts after this
		c.SendRaw("Subject: unfinished\r\n\r\nand then nothing")
		c.Expect("421 4.4.2 *")
		if d := time.Since(silent); d < timeout {
			t.Errorf("421 after %v of silence, before command_timeout (%v)", d, timeout)
		}
		c.ExpectClosed(5 * time.Second)
		end := checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
		if e, _ := end["error"].(string); !strings.Contains(e, "command_timeout") {
			t.Errorf("session.end error %q", e)
		}
		if got := prov.received(); len(got) != 0 {
			t.Errorf("the provider kept %d messages", len(got))
		}
	})
}

// TestRefuse: the refusal before a session starts.
func TestRefuse(t *testing.T) {
	var b strings.Builder
	smtp.Front{}.Refuse(&b, policy.ReasonLimit, "too many connections, try again later")
	if got := b.String(); got != "421 4.7.0 too many connections, try again later\r\n" {
		t.Errorf("Refuse wrote %q", got)
	}
}

// TestProviderExtensionsAtMail: the EHLO reply is given before the
// provider is known; a transaction that needs what this provider lacks
// (8BITMIME, RFC 6152; SMTPUTF8, RFC 6531; DSN, RFC 3461) is refused at
// MAIL or RCPT, saying why, rather than sent without it.
func TestProviderExtensionsAtMail(t *testing.T) {
	pki := testkit.NewPKI(t)
	addr := testkit.Scripted(t, pki.ServerConfig(), func(c *testkit.Conn) {
		c.Send("220 old.example ESMTP")
		c.Expect("EHLO localhost")
		c.Send("250-old.example\r\n250-AUTH PLAIN\r\n250 SIZE 100000")
		c.Expect("AUTH PLAIN *")
		c.Send("235 2.7.0 ok")
		c.Expect("QUIT")
		c.Send("221 bye")
	})
	p := start(t, pki, "smtps://"+addr)
	c := testkit.Dial(t, p.Addr)
	greet(c, "app.example")
	c.Send("AUTH PLAIN %s", b64("\x00"+user+"\x00"+password))
	c.Expect("235 *")
	c.Send("MAIL FROM:<%s> BODY=8BITMIME", user)
	c.Expect("555 5.6.3 *8BITMIME*")
	c.Send("MAIL FROM:<%s> SMTPUTF8", user)
	c.Expect("555 5.6.7 *SMTPUTF8*")
	c.Send("MAIL FROM:<%s> RET=HDRS", user)
	c.Expect("555 5.5.4 *DSN*")
	quit(c)
}

// TestNoProviderConnectionBeforeAuth: an app that connects, sits idle,
// asks EHLO and leaves costs the provider nothing; a login opens exactly
// one connection.
func TestNoProviderConnectionBeforeAuth(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint)
	for range 5 {
		c := testkit.Dial(t, p.Addr)
		time.Sleep(20 * time.Millisecond)
		greet(c, "pc")
		c.Send("NOOP")
		c.Expect("250 *")
		quit(c)
	}
	p.Audit.WaitFor(t, "session.end", 5)
	if n := prov.conns.Load(); n != 0 {
		t.Fatalf("the provider saw %d connections from apps that never logged in", n)
	}
	c := testkit.Dial(t, p.Addr)
	login(c)
	quit(c)
	p.Audit.WaitFor(t, "session.end", 6)
	if n := prov.conns.Load(); n != 1 {
		t.Errorf("one login: the provider saw %d connections, want 1", n)
	}
}
