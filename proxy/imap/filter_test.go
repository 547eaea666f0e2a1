package imap_test

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"mailproxy/internal/testkit"
)

// TestLoginReplyFilter: every REFERRAL in the provider's login reply is
// removed and audited, whichever status word carries it, however many
// spaces precede its "[", and wherever it stands after a response that
// carries a literal; what a literal holds never reaches the app as a line
// of its own, nor does a line under another tag than mailproxy's.
func TestLoginReplyFilter(t *testing.T) {
	pki := testkit.NewPKI(t)
	for _, tc := range []struct {
		name  string
		reply string   // the provider's login reply, raw
		want  []string // what the app gets
		hosts []string // policy.denied non_provider_host, in order
	}{{
		name: "after a literal",
		reply: "* XFOO {1}\r\nx\r\n" +
			"* NO [REFERRAL imap://evil1.test/] go away\r\n" +
			"* CAPABILITY IMAP4rev1 ID {3}\r\nabc more\r\n" +
			"* CAPABILITY IMAP4rev1 ID IDLE\r\n" +
			"mp1 NO Try another server\r\n",
		want:  []string{"* NO go away", "* CAPABILITY IMAP4rev1 IDLE", "a1 NO Try another server"},
		hosts: []string{"evil1.test"},
	}, {
		name: "BYE and PREAUTH",
		reply: "* BYE [REFERRAL imap://evil2.test/] moved\r\n" +
			"* PREAUTH [REFERRAL imap://evil3.test/]\r\n" +
			"mp1 NO [REFERRAL imap://localhost:993/] elsewhere\r\n",
		want:  []string{"* BYE moved", "* PREAUTH Login referral removed by mailproxy", "a1 NO elsewhere"},
		hosts: []string{"evil2.test", "evil3.test"},
	}, {
		name: "extra spaces",
		reply: "*  OK   [REFERRAL imap://evil4.test/] here\r\n" +
			"* ok [ referral imap://evil5.test/]\r\n" +
			"mp1 NO  [REFERRAL imap://evil6.test/] Try\r\n",
		want:  []string{"* OK here", "* ok Login referral removed by mailproxy", "a1 NO Try"},
		hosts: []string{"evil4.test", "evil5.test", "evil6.test"},
	}, {
		// An app that does not take a status text's {n} for a literal
		// would read the literal as a response of its own.
		name: "inside a literal",
		reply: "* OK {36}\r\n* NO [REFERRAL imap://evil7.test/]\r\n\r\n" +
			"* OK [REFERRAL imap://evil8.test/ {2}\r\n\r\n\r\n" +
			"* OK hello\rworld\r\n" +
			"a1 OK [REFERRAL imap://evil10.test/] not mailproxy's tag\r\n" +
			"mp1 NO bye {34}\r\n* NO [REFERRAL imap://evil9.test/]\r\n",
		want:  []string{"* OK hello world", "a1 NO bye"},
		hosts: []string{"evil8.test", "evil10.test"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := scripted(t, pki, func(c *testkit.Conn) {
				c.Send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready")
				c.Expect("mp1 AUTHENTICATE PLAIN *")
				c.SendRaw(tc.reply)
				c.Line()
			})
			p := start(t, pki, endpoint)
			c := testkit.Dial(t, p.Addr)
			c.Expect("* OK *")
			c.Send("a1 AUTHENTICATE PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+password)))
			got := c.ExpectUntil("a1 *")
			if !slices.Equal(got, tc.want) {
				t.Errorf("the app got\n%q\nwant\n%q", got, tc.want)
			}
			c.Send("a2 LOGOUT")
			c.ExpectUntil("a2 OK *")
			c.C.Close()
			p.Audit.WaitFor(t, "session.end", 1)
			var hosts []string
			for _, d := range p.Audit.Find(t, "policy.denied") {
				if d["reason"] != "non_provider_host" {
					t.Errorf("policy.denied %v", d)
				}
				h, _ := d["host"].(string)
				hosts = append(hosts, h)
			}
			if !slices.Equal(hosts, tc.hosts) {
				t.Errorf("policy.denied hosts %q, want %q", hosts, tc.hosts)
			}
			if s := p.Audit.String(); strings.Contains(s, "evil7") || strings.Contains(s, "evil9") {
				t.Errorf("a literal's content was read as a response:\n%s", s)
			}
		})
	}
}
