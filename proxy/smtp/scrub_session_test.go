package smtp_test

import (
	"fmt"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
	"mailproxy/proxy"
)

const fingerprinted = "From: alice@example.test\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0)\r\n" +
	" Gecko/20100101 Thunderbird/128.3.0\r\n" +
	"X-Mailer: Foo Mail 1.2 (Windows 11)\r\n" +
	"Subject: hello\r\n" +
	"Content-Type: multipart/mixed; boundary=b\r\n" +
	"\r\n" +
	"--b\r\n" +
	"X-Mailer: a part's own header\r\n" +
	"\r\n" +
	"text\r\n" +
	"--b--\r\n"

const scrubbed = "From: alice@example.test\r\n" +
	"Subject: hello\r\n" +
	"Content-Type: multipart/mixed; boundary=b\r\n" +
	"\r\n" +
	"--b\r\n" +
	"X-Mailer: a part's own header\r\n" +
	"\r\n" +
	"text\r\n" +
	"--b--\r\n"

func scrubbing(names ...string) func(*proxy.Settings) {
	return func(st *proxy.Settings) { st.Listen.Provider.ScrubHeaders = names }
}

// The provider receives the message without the listed top-level fields,
// by DATA and by BDAT chunks cut inside a folded field, and session.end
// counts them.
func TestScrubHeaders(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, scrubbing("User-Agent", "X-Mailer"))
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff(fingerprinted))
	c.Expect("250 2.0.0 Ok: queued as Q1234")

	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	cut := strings.Index(fingerprinted, "Gecko")
	c.SendRaw(fmt.Sprintf("BDAT %d\r\n%s", cut, fingerprinted[:cut]))
	c.Expect("250 *")
	c.SendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(fingerprinted)-cut, fingerprinted[cut:]))
	c.Expect("250 2.0.0 Ok: queued as Q1234")
	quit(c)

	got := prov.received()
	if len(got) != 2 {
		t.Fatalf("the provider received %d messages", len(got))
	}
	for _, m := range got {
		if string(m.data) != scrubbed {
			t.Errorf("the provider received\n%q\nwant\n%q", m.data, scrubbed)
		}
	}
	end := checkAudit(t, p, sessionEvents)
	if number(end, "scrubbed") != 4 || number(end, "messages") != 2 {
		t.Errorf("session.end %v, want scrubbed 4 for 2 messages", end)
	}
}

// A header block over max_header_block is refused with 552, audited, and
// nothing of it reaches the provider; the session goes on.
func TestHeaderBlockLimit(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, scrubbing("X-Mailer"), func(st *proxy.Settings) { st.Limits.MaxHeaderBlock = 4096 })
	c := testkit.Dial(t, p.Addr)
	login(c)
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	big := "X-Mailer: m\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("f", 60)+"\r\n", 100) + "\r\nbody\r\n"
	c.SendRaw(dotStuff(big))
	c.Expect("552 5.3.4 *header block is larger than 4096 bytes*")
	if got := prov.received(); len(got) != 0 {
		t.Fatalf("the provider received %d messages", len(got))
	}
	// Nothing was cut: the next message goes through.
	c.Send("RSET")
	c.Expect("250 *")
	c.Send("MAIL FROM:<%s>", user)
	c.Expect("250 *")
	c.Send("RCPT TO:<bob@example.test>")
	c.Expect("250 *")
	c.Send("DATA")
	c.Expect("354 *")
	c.SendRaw(dotStuff(scrubbed))
	c.Expect("250 *")
	quit(c)
	if got := prov.received(); len(got) != 1 || string(got[0].data) != scrubbed {
		t.Fatalf("the provider received %+v", got)
	}
	checkAudit(t, p, []string{"session.start", "upstream.connect", "upstream.tls", "auth", "policy.denied", "session.end"})
	if d := p.Audit.Find(t, "policy.denied"); d[0]["reason"] != "limit" || !strings.Contains(d[0]["detail"].(string), "max_header_block") {
		t.Errorf("denied event %v", d[0])
	}
}

// A message with no header block end, and an empty message, still reach
// the provider (DATA starts at the end of the app's message then).
func TestScrubHeadersOnlyAndEmpty(t *testing.T) {
	pki := testkit.NewPKI(t)
	prov := startProvider(t, pki, "smtps")
	p := start(t, pki, prov.endpoint, scrubbing("X-Mailer"))
	c := testkit.Dial(t, p.Addr)
	login(c)
	for _, msg := range []string{"Subject: only headers\r\nX-Mailer: m\r\n", ""} {
		c.Send("MAIL FROM:<%s>", user)
		c.Expect("250 *")
		c.Send("RCPT TO:<bob@example.test>")
		c.Expect("250 *")
		c.Send("DATA")
		c.Expect("354 *")
		c.SendRaw(dotStuff(msg))
		c.Expect("250 2.0.0 Ok: queued as Q1234")
	}
	quit(c)
	got := prov.received()
	// An empty message arrives as one empty line: go-smtp's client (Go's
	// textproto dot writer) ends what it sends with a line end.
	if len(got) != 2 || string(got[0].data) != "Subject: only headers\r\n" || string(got[1].data) != "\r\n" {
		t.Fatalf("the provider received %+v", got)
	}
	end := checkAudit(t, p, sessionEvents)
	if number(end, "scrubbed") != 1 {
		t.Errorf("session.end %v, want scrubbed 1", end)
	}
}
