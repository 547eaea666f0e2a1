//go:build e2e

package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailproxy/internal/authserver"
)

// The OAuth2 scenario runs beside the password provider, not inside it: a
// second Dovecot instance whose only passdb is oauth2 (XOAUTH2 and
// OAUTHBEARER, tokens checked by introspection at the test authorization
// server over TLS), serving the same maildirs, and a second Postfix whose
// submission authenticates through that Dovecot's SASL socket and
// delivers into the same maildirs. So every password scenario keeps its
// provider as it was, and this one sees a provider that takes tokens only.
// The authorization server (internal/authserver) runs in the test process
// on 127.0.0.1 with the provider's server certificate, from the CA both
// Dovecot and mailproxy trust.

// oauthLocal is alice's local password: her apps log in to mailproxy with
// it; it unlocks the stored grant and never reaches the provider.
const oauthLocal = "e2e-Local-Secret-7Vh2qN"

// introspectPass protects the authorization server's introspection.
const introspectPass = "e2e-Introspect-Secret-3Wd9"

type oauthProvider struct {
	dir        string
	as         *authserver.Server
	caFile     string // the provider's CA, which the authorization server's certificate is from too
	imaps      int
	pop3s      int
	smtps      int
	dovecotLog *logFile
	postfixLog *logFile
	procs      []*proc
}

func (o *oauthProvider) stop() {
	for _, p := range o.procs {
		p.stop(10 * time.Second)
	}
	o.as.Close()
}

// startOAuthProvider writes and starts the OAuth2 Dovecot and Postfix.
func startOAuthProvider(t *testing.T, e *env) *oauthProvider {
	t.Helper()
	dir := filepath.Join(e.work, "oauth")
	for _, d := range []string{"dovecot/run", "dovecot/state", "postfix/queue"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The token endpoint presents the provider's own server certificate
	// (valid for 127.0.0.1), as a provider's login and mail hosts share
	// their CA: trust on first use remembers one anchor per host, and
	// here both are the host 127.0.0.1.
	tlsDir := filepath.Join(e.prov.dir, "tls")
	cert, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "server.pem"), filepath.Join(tlsDir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	asCA := e.prov.caFile
	as, err := authserver.Start(cert, "mailproxy-e2e", "", alice.name)
	if err != nil {
		t.Fatal(err)
	}
	as.IntrospectUser, as.IntrospectPassword = "dovecot", introspectPass
	as.Rotate = true
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	o := &oauthProvider{dir: dir, as: as, imaps: ports[0], pop3s: ports[1], smtps: ports[2],
		caFile:     e.prov.caFile,
		dovecotLog: &logFile{"dovecot (oauth2 instance)", filepath.Join(dir, "dovecot", "dovecot.log")},
		postfixLog: &logFile{"postfix (oauth2 instance)", filepath.Join(dir, "postfix", "postfix.log")},
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			o.stop()
			t.Fatal(err)
		}
	}
	pd := e.prov.dir
	uid := "5000"
	must(os.WriteFile(filepath.Join(dir, "dovecot", "oauth2.conf.ext"), []byte(fmt.Sprintf(`introspection_mode = post
introspection_url = https://dovecot:%s@%s/introspect
tls_ca_cert_file = %s
username_attribute = username
active_attribute = active
active_value = true
`, introspectPass, as.Addr(), asCA)), 0o640))
	must(runQuiet(nil, "chgrp", "dovecot", filepath.Join(dir, "dovecot", "oauth2.conf.ext")))
	must(os.WriteFile(filepath.Join(dir, "dovecot", "dovecot.conf"), []byte(fmt.Sprintf(`# Written by e2e/oauth_test.go: the provider's OAuth2-only Dovecot.
instance_name = mailproxy-e2e-oauth
base_dir = %[1]s/dovecot/run
state_dir = %[1]s/dovecot/state
log_path = %[1]s/dovecot/dovecot.log
listen = 127.0.0.1
shutdown_clients = yes
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cert = <%[2]s/tls/server.pem
ssl_key = <%[2]s/tls/server.key
disable_plaintext_auth = yes
auth_mechanisms = xoauth2 oauthbearer
auth_verbose = yes
auth_failure_delay = 0
# A revoked token must stop working at once.
auth_cache_size = 0
first_valid_uid = %[3]s
last_valid_uid = %[3]s
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %[1]s/dovecot/oauth2.conf.ext
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[2]s/dovecot/users
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
}
protocols = imap pop3
protocol pop3 {
  pop3_uidl_format = %%08Xu%%08Xv
}
login_log_format_elements = user=<%%u> method=%%m rip=%%r lip=%%l mpid=%%e %%c %%k session=<%%{session}>
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[4]d
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = %[5]d
    ssl = yes
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
`, dir, pd, uid, o.imaps, o.pop3s)), 0o644))

	// Postfix: the provider's main.cf and master.cf with this instance's
	// folders, its SASL socket, and its own submission port.
	pf := filepath.Join(dir, "postfix")
	mainCf, err := os.ReadFile(filepath.Join(pd, "postfix", "main.cf"))
	must(err)
	set := map[string]string{
		"queue_directory":       pf + "/queue",
		"data_directory":        pf + "/data",
		"maillog_file":          pf + "/postfix.log",
		"maillog_file_prefixes": pf,
		"smtpd_sasl_path":       dir + "/dovecot/run/auth-postfix",
	}
	var out []string
	for _, l := range strings.Split(string(mainCf), "\n") {
		k, _, _ := strings.Cut(l, " =")
		if v, ok := set[k]; ok {
			l = k + " = " + v
		}
		out = append(out, l)
	}
	must(os.WriteFile(filepath.Join(pf, "main.cf"), []byte(strings.Join(out, "\n")), 0o644))
	masterCf, err := os.ReadFile(filepath.Join(pd, "postfix", "master.cf"))
	must(err)
	m := strings.Replace(string(masterCf), fmt.Sprintf("127.0.0.1:%d ", e.prov.ports.SMTPS), fmt.Sprintf("127.0.0.1:%d ", o.smtps), 1)
	m = strings.Replace(m, fmt.Sprintf("127.0.0.1:%d ", e.prov.ports.Submission), fmt.Sprintf("127.0.0.1:%d ", ports[3]), 1)
	must(os.WriteFile(filepath.Join(pf, "master.cf"), []byte(m), 0o644))
	must(runQuiet(nil, "postfix", "-c", pf, "check"))
	daemonDir, err := runOutput("postconf", "-c", pf, "-h", "daemon_directory")
	must(err)

	logs := filepath.Join(dir, "out")
	must(os.MkdirAll(logs, 0o755))
	dv, err := startProc("dovecot-oauth", filepath.Join(logs, "dovecot.out"), true, nil,
		"dovecot", "-F", "-c", filepath.Join(dir, "dovecot", "dovecot.conf"))
	must(err)
	o.procs = append(o.procs, dv)
	must(waitPort(dv, o.imaps, 20*time.Second))
	must(waitPort(dv, o.pop3s, 20*time.Second))
	must(waitFile(dv, filepath.Join(dir, "dovecot", "run", "auth-postfix"), 20*time.Second))
	px, err := startProc("postfix-oauth", filepath.Join(logs, "postfix.out"), false, []string{"MAIL_CONFIG=" + pf},
		filepath.Join(strings.TrimSpace(daemonDir), "master"), "-c", pf, "-s")
	must(err)
	o.procs = append(o.procs, px)
	must(waitPort(px, o.smtps, 20*time.Second))
	return o
}

func runOutput(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	return string(out), err
}

// startOAuthMailproxy writes a configuration with the OAuth2 provider and
// a listener per protocol, and starts `mailproxy run` with its data folder.
func startOAuthMailproxy(t *testing.T, e *env, o *oauthProvider, data string) *mailproxy {
	t.Helper()
	dir := filepath.Join(e.work, "mailproxy-oauth")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	mp := &mailproxy{
		name:   "mailproxy-oauth",
		cfg:    filepath.Join(dir, "mailproxy.toml"),
		audit:  &logFile{"mailproxy-oauth audit", filepath.Join(dir, "audit.jsonl")},
		stderr: &logFile{"mailproxy-oauth stderr", filepath.Join(dir, "mailproxy.out")},
		ports:  map[string]int{"imap/tls": ports[0], "pop3/tls": ports[1], "smtp/tls": ports[2]},
	}
	cfg := fmt.Sprintf(`# Written by the mailproxy e2e suite (OAuth2).
[log]
audit = %q

[[provider]]
name = "oauth"
hosts = ["127.0.0.1"]
imap = "imaps://127.0.0.1:%d"
pop3 = "pop3s://127.0.0.1:%d"
smtp = "smtps://127.0.0.1:%d"
ca_file = %q
allow_private_addresses = true
[provider.oauth2]
client_id = "mailproxy-e2e"
auth_url = "%s/authorize"
token_url = "%s/token"
device_auth_url = "%s/device"
scopes = ["mail"]
`, mp.audit.path, o.imaps, o.pop3s, o.smtps, o.caFile, o.as.URL, o.as.URL, o.as.URL)
	for _, proto := range []string{"imap", "pop3", "smtp"} {
		cfg += fmt.Sprintf("\n[[listen]]\nprotocol = %q\naddress = \"127.0.0.1:%d\"\nprovider = \"oauth\"\n", proto, mp.ports[proto+"/tls"])
	}
	if err := os.WriteFile(mp.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// Under strace, so that the test can show every connection went to
	// the provider's ports or its token endpoint on 127.0.0.1.
	mp.straceOut = filepath.Join(dir, "strace.out")
	mp.proc, err = startProc(mp.name, mp.stderr.path, true, []string{"XDG_DATA_HOME=" + data},
		append(straceArgv(mp.straceOut), e.bin, "run", "-config", mp.cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, mp)
	for key := range mp.ports {
		if err := mp.waitListener(key, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return mp
}

// oauthStep is a step on the OAuth2 provider: its logs are shown too.
func (e *env) oauthStep(t *testing.T, o *oauthProvider, client string, mp *mailproxy, proto, what string) *step {
	t.Helper()
	port := map[string]int{"imap": o.imaps, "pop3": o.pop3s, "smtp": o.smtps}[proto]
	r := route{mp: mp, proto: proto, mode: modeTLS, port: mp.ports[proto+"/tls"],
		upstream: fmt.Sprintf("%ss://127.0.0.1:%d (oauth2)", proto, port), upstreamPort: port}
	s := e.step(t, client, r, what)
	for _, l := range []*logFile{o.dovecotLog, o.postfixLog} {
		s.logs = append(s.logs, l)
		s.marks = append(s.marks, l.size())
	}
	return s
}

var pop3Script = `
import os, poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=60)
p.user(sys.argv[3])
p.pass_(os.environ["E2E_PASSWORD"])
count, _ = p.stat()
found = False
for i in range(1, count + 1):
    lines = p.retr(i)[1]
    if any(sys.argv[4].encode() in l for l in lines):
        found = True
p.quit()
print("found" if found else "missing")
`

// TestOAuth: alice authorizes mailproxy once (`mailproxy authorize
// -device`, the test server approving); then real apps use her local
// password through mailproxy against a provider that takes OAuth2 tokens
// only: swaks submits, curl and imaplib read over IMAP, poplib over POP3.
// A wrong local password is a normal authentication failure that never
// reaches the provider; a revoked grant is a clear failure with
// oauth2.token result=revoked, and mailproxy does not ask again.
func TestOAuth(t *testing.T) {
	e := suite.begin(t)
	o := startOAuthProvider(t, e)
	defer o.stop()
	local := user{alice.name, oauthLocal}
	e.secrets = append(e.secrets, secretForms(local)...)
	e.secrets = append(e.secrets, introspectPass)
	slices.SortFunc(e.secrets, func(a, b string) int { return len(b) - len(a) })
	defer func() {
		// No token, code or device code the server issued in any log of
		// mailproxy's.
		for _, b := range e.logsOf() {
			for _, sec := range o.as.Secrets() {
				if sec != "" && bytes.Contains(b, []byte(sec)) {
					t.Errorf("PRIVACY: a mailproxy log holds an OAuth2 token or code")
				}
			}
		}
	}()

	data := filepath.Join(e.work, "oauth-data")
	mp := startOAuthMailproxy(t, e, o, data)

	s := e.oauthStep(t, o, "mailproxy authorize", mp, "imap", "authorize mailproxy with the device flow")
	authorizeTrace := filepath.Join(e.work, "mailproxy-oauth", "authorize.strace")
	r := s.run(cmdOpts{env: []string{"XDG_DATA_HOME=" + data}, stdin: []byte(oauthLocal + "\n")},
		append(straceArgv(authorizeTrace), e.bin, "authorize", "-config", mp.cfg, "-provider", "oauth", "-device", alice.name)...)
	if r.code != 0 || !strings.Contains(string(r.stdout), "Stored") {
		s.Fatalf("mailproxy authorize failed\n%s", r.describe())
	}
	s.expectAudit("upstream.tls", map[string]string{"conn": "authorize", "proto": "https", "verified": "true"})
	e.checkNoSecretsIn(t, "mailproxy authorize's output", append(r.stdout, r.stderr...))

	msg := smallMessage(t, alice, alice, "oauth")
	s = e.oauthStep(t, o, "swaks", mp, "smtp", "submit with the local password")
	if r := s.swaks(local, alice.name, msg.file, appEHLO); r.code != 0 {
		s.Fatalf("swaks failed\n%s", r.describe())
	}
	s.expectAudit("oauth2.token", map[string]string{"account": alice.name, "provider": "oauth", "result": "refreshed"})
	s.expectAudit("auth", map[string]string{"user": alice.name, "result": "ok"})
	s.waitLog(o.postfixLog, "Postfix's OAuth2 login", "sasl_method=", "sasl_username="+alice.name)

	s = e.oauthStep(t, o, "curl", mp, "imap", "find the message with the local password")
	uid := 0
	for deadline := time.Now().Add(30 * time.Second); uid == 0; {
		r := s.run(cmdOpts{}, "curl", "-sS", "--max-time", "60", "--netrc-file", e.oauthNetrc(t, local),
			"-X", fmt.Sprintf(`UID SEARCH HEADER Message-ID "%s"`, msg.msgid), fmt.Sprintf("imap://127.0.0.1:%d/INBOX", mp.ports["imap/tls"]))
		if r.code != 0 {
			s.Fatalf("curl failed\n%s", r.describe())
		}
		if m := searchRE.FindStringSubmatch(string(r.stdout)); m != nil && strings.TrimSpace(m[1]) != "" {
			uid, _ = strconv.Atoi(strings.Fields(m[1])[0])
		}
		if uid == 0 && time.Now().After(deadline) {
			s.Fatalf("the message did not arrive\n%s", r.describe())
		}
		if uid == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	s.waitLog(o.dovecotLog, "Dovecot's OAuth2 login", "imap-login:", "Login:", "user=<"+alice.name+">", "method=OAUTHBEARER", "TLSv1.3")

	s = e.oauthStep(t, o, "imaplib", mp, "imap", "fetch the message with imaplib")
	got, _ := s.imaplib(local, "INBOX", msg.msgid)
	if !bytes.Contains(got, []byte(msg.msgid)) {
		s.Fatalf("imaplib fetched another message")
	}

	s = e.oauthStep(t, o, "poplib", mp, "pop3", "retrieve the message with poplib")
	py, _ := pythonPath()
	r = s.run(cmdOpts{env: []string{"E2E_PASSWORD=" + oauthLocal}}, py, "-c", pop3Script, "127.0.0.1", strconv.Itoa(mp.ports["pop3/tls"]), alice.name, msg.msgid)
	if r.code != 0 || strings.TrimSpace(string(r.stdout)) != "found" {
		s.Fatalf("poplib did not find the message\n%s", r.describe())
	}
	s.waitLog(o.dovecotLog, "Dovecot's OAuth2 POP3 login", "pop3-login:", "Login:", "user=<"+alice.name+">", "method=OAUTHBEARER")
	refreshes := o.as.Count("refresh")
	if refreshes < 1 || refreshes > 2 {
		t.Errorf("%d refreshes for the logins so far (a cached token serves the later ones)", refreshes)
	}

	s = e.oauthStep(t, o, "curl", mp, "imap", "log in with a wrong local password")
	wrong := user{alice.name, wrongPassword}
	if r := s.run(cmdOpts{}, "curl", "-sS", "--netrc-file", e.oauthNetrc(t, wrong), "-X", "NOOP", fmt.Sprintf("imap://127.0.0.1:%d/INBOX", mp.ports["imap/tls"])); r.code != 67 {
		s.Fatalf("curl should report a refused login (exit 67)\n%s", r.describe())
	}
	s.expectAudit("auth", map[string]string{"user": alice.name, "result": "fail"})
	for _, ev := range s.auditEvents() {
		if ev.str("msg") == "upstream.connect" {
			s.Fatalf("a wrong local password made mailproxy connect to %s", ev.str("addr"))
		}
	}

	// Revoked at the provider: the cached token is refused by Dovecot
	// (the app sees the provider's failure), then the grant's refresh is
	// refused: a clear text for the app, and no further request.
	o.as.Revoke(alice.name)
	s = e.oauthStep(t, o, "curl", mp, "imap", "log in after the grant was revoked")
	var last *result
	for range 3 {
		last = s.run(cmdOpts{}, "curl", "-v", "-sS", "--netrc-file", e.oauthNetrc(t, local), "-X", "NOOP", fmt.Sprintf("imap://127.0.0.1:%d/INBOX", mp.ports["imap/tls"]))
		if last.code != 67 {
			s.Fatalf("curl should report a refused login (exit 67)\n%s", last.describe())
		}
	}
	if !regexp.MustCompile(`NO \[AUTHENTICATIONFAILED\] the provider no longer accepts mailproxy's authorization for ` + regexp.QuoteMeta(alice.name) + `: run .mailproxy authorize`).Match(last.stderr) {
		s.Fatalf("curl was not told that the grant is revoked\n%s", last.describe())
	}
	s.expectAudit("oauth2.token", map[string]string{"account": alice.name, "result": "revoked"})
	if n := o.as.Count("refresh"); n != refreshes+1 {
		t.Errorf("%d refresh requests after the revocation, want 1 (no loop)", n-refreshes)
	}
	s = e.oauthStep(t, o, "swaks", mp, "smtp", "submit after the grant was revoked")
	if r := s.swaks(local, alice.name, msg.file, appEHLO); r.code != 28 || !strings.Contains(string(r.stdout), "no longer accepts") {
		s.Fatalf("swaks should report the revoked grant (exit 28)\n%s", r.describe())
	}

	// Every connection of `mailproxy authorize` and `mailproxy run` went to
	// the provider's mail ports or its token endpoint, on 127.0.0.1.
	if err := mp.stop(); err != nil {
		t.Fatalf("stopping mailproxy under strace: %v", err)
	}
	asPort, _ := strconv.Atoi(o.as.Addr()[strings.LastIndexByte(o.as.Addr(), ':')+1:])
	allowed := map[int]bool{o.imaps: true, o.pop3s: true, o.smtps: true, asPort: true}
	s = e.step(t, "strace", route{mp: mp, proto: "imap, pop3, smtp, https", desc: mp.name + " -> the provider's ports and token endpoint on 127.0.0.1"},
		"check every connect, sendto and sendmsg of mailproxy authorize and run")
	seen := map[int]bool{}
	for _, f := range []string{authorizeTrace, mp.straceOut} {
		trace, err := os.ReadFile(f)
		if err != nil {
			s.Fatalf("reading the strace output: %v", err)
		}
		got, bad := checkTrace(string(trace), allowed)
		if len(bad) > 0 {
			s.Fatalf("PRIVACY: mailproxy reached outside the provider on 127.0.0.1 (allowed ports %v):\n%s", keys(allowed), strings.Join(bad, "\n"))
		}
		for p := range got {
			seen[p] = true
		}
	}
	for p := range allowed {
		if !seen[p] {
			s.Fatalf("strace saw no connect to 127.0.0.1:%d, which the scenario used: is the trace complete?", p)
		}
	}
}

// straceArgv runs a command under strace, recording its connect, sendto
// and sendmsg calls into out.
func straceArgv(out string) []string {
	return []string{"strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", out, "--"}
}

// oauthNetrc writes a curl netrc for u.
func (e *env) oauthNetrc(t *testing.T, u user) string {
	p := filepath.Join(e.work, "secrets", "oauth-"+strconv.Itoa(len(u.pass))+"-"+strconv.Itoa(int(u.pass[0]))+".netrc")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("machine 127.0.0.1 login %s password %s\n", u.name, u.pass)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logsOf returns the contents of every mailproxy log of the suite.
func (e *env) logsOf() [][]byte {
	var out [][]byte
	for _, mp := range append([]*mailproxy{e.mp}, e.extra...) {
		for _, l := range []*logFile{mp.audit, mp.stderr} {
			b, _ := os.ReadFile(l.path)
			out = append(out, b)
		}
	}
	return out
}
