//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var keep = flag.Bool("e2e.keep", false, "keep the suite's temporary folder (configs, logs, audit) and print its path")

// env is what every scenario shares: the provider, the mailproxy binary,
// and the main `mailproxy run` in front of the provider.
type env struct {
	work string // the temporary folder holding everything
	bin  string // the mailproxy binary built from this checkout
	prov *provider
	mp   *mailproxy
	// extra are further mailproxy instances (the strace one), stopped at
	// the end if a test did not stop them itself.
	extra []*mailproxy
	// secrets are the passwords and their encodings on the wire; none may
	// appear in any output the suite shows or in any audit log.
	secrets []string
	// netrc holds a curl netrc file per user, and "wrong" for alice with
	// the wrong password, so that passwords never go on a command line.
	netrc map[string]string
}

// suite is set up by TestMain before any test runs.
var suite *env

func TestMain(m *testing.M) {
	flag.Parse()
	start := time.Now()
	e, err := setup()
	code := 1
	var missing *missingError
	switch {
	case errors.As(err, &missing) && os.Getenv("MAILPROXY_REQUIRE_TOOLS") == "":
		// The house rule: a test that needs an external tool skips without
		// it, and fails when MAILPROXY_REQUIRE_TOOLS is set (as CI does).
		fmt.Printf("e2e: SKIP: %v (set MAILPROXY_REQUIRE_TOOLS=1 to fail instead)\n", err)
		code = 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "e2e: setting up the provider and mailproxy failed:\n%v\n", err)
	default:
		fmt.Printf("e2e: provider and mailproxy up in %v (work folder %s)\n", time.Since(start).Round(time.Millisecond), e.work)
		suite = e
		code = m.Run()
	}
	if e != nil {
		if err := e.teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: teardown: %v\n", err)
			code = 1
		}
	}
	fmt.Printf("e2e: finished in %v\n", time.Since(start).Round(time.Millisecond))
	os.Exit(code)
}

// tools are the programs the suite runs, with the Debian package of each.
var tools = []struct{ cmd, pkg string }{
	{"dovecot", "dovecot-imapd dovecot-pop3d"},
	{"doveconf", "dovecot-core"},
	{"postfix", "postfix"},
	{"postconf", "postfix"},
	{"haproxy", "haproxy"},
	{"openssl", "openssl"},
	{"curl", "curl"},
	{"swaks", "swaks"},
	{"mbsync", "isync"},
	{"fetchmail", "fetchmail"},
	{"strace", "strace"},
	{"microsocks", "microsocks"},
	{"gpg", "gnupg"},
	{"go", "(Go toolchain)"},
}

// missingError is a machine that cannot run the suite: not root, or
// programs missing.
type missingError struct{ msg string }

func (e *missingError) Error() string { return e.msg }

func setup() (*env, error) {
	if os.Geteuid() != 0 {
		return nil, &missingError{"the e2e suite runs Dovecot and Postfix as private instances and needs root"}
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t.cmd); err != nil {
			missing = append(missing, t.cmd+" (apt package "+t.pkg+")")
		}
	}
	if _, err := pythonPath(); err != nil {
		missing = append(missing, "python3 (apt package python3)")
	}
	if len(missing) > 0 {
		return nil, &missingError{"missing programs: " + strings.Join(missing, ", ")}
	}

	work, err := os.MkdirTemp("", "mailproxy-e2e-")
	if err != nil {
		return nil, err
	}
	// Dovecot's and Postfix's unprivileged processes walk into it.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	e := &env{work: work, netrc: map[string]string{}}
	// The mailproxy processes (run, check) keep their trust store here,
	// never in the user's data folder.
	if err := os.Setenv("XDG_DATA_HOME", filepath.Join(work, "data")); err != nil {
		return e, err
	}
	if reaper, err = startWatchdog(filepath.Join(work, "pids")); err != nil {
		return e, err
	}
	for _, u := range []user{alice, bob, {alice.name, wrongPassword}} {
		e.secrets = append(e.secrets, secretForms(u)...)
	}
	// Longest first: base64 of a password can be a substring of base64 of
	// the SASL PLAIN blob that holds it.
	slices.SortFunc(e.secrets, func(a, b string) int { return len(b) - len(a) })

	if bin := os.Getenv("E2E_MAILPROXY"); bin != "" {
		// A binary built elsewhere (another branch, a release).
		e.bin = bin
	} else {
		e.bin = filepath.Join(work, "bin", "mailproxy")
		build := exec.Command("go", "build", "-o", e.bin, "./cmd/mailproxy")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return e, fmt.Errorf("go build ./cmd/mailproxy: %v\n%s", err, out)
		}
	}
	if err := e.writeSecretsFiles(); err != nil {
		return e, err
	}
	e.prov, err = startProvider(filepath.Join(work, "provider"))
	if err != nil {
		return e, err
	}
	e.mp, err = e.startMailproxy("mailproxy", false)
	if err != nil {
		return e, err
	}
	printVersions()
	return e, nil
}

// secretForms are the ways a password of u can appear in a transcript:
// as typed, and base64 as in SASL PLAIN and LOGIN.
func secretForms(u user) []string {
	b64 := base64.StdEncoding.EncodeToString
	return []string{
		u.pass,
		b64([]byte(u.pass)),
		b64([]byte("\x00" + u.name + "\x00" + u.pass)),
		b64([]byte(u.name + "\x00" + u.name + "\x00" + u.pass)),
	}
}

// writeSecretsFiles writes the curl netrc files (mode 0600).
func (e *env) writeSecretsFiles() error {
	dir := filepath.Join(e.work, "secrets")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, u := range map[string]user{"alice": alice, "bob": bob, "wrong": {alice.name, wrongPassword}} {
		p := filepath.Join(dir, name+".netrc")
		content := fmt.Sprintf("machine 127.0.0.1 login %s password %s\n", u.name, u.pass)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return err
		}
		e.netrc[name] = p
	}
	return nil
}

// redact replaces every form of every password with ***.
func (e *env) redact(s string) string {
	for _, sec := range e.secrets {
		s = strings.ReplaceAll(s, sec, "***")
	}
	return s
}

// checkNoSecretsIn fails the test if b holds a password in any form.
func (e *env) checkNoSecretsIn(t *testing.T, what string, b []byte) {
	t.Helper()
	for i, sec := range e.secrets {
		if bytes.Contains(b, []byte(sec)) {
			t.Errorf("PRIVACY: %s contains a password (form #%d of the test passwords; not shown)", what, i)
		}
	}
}

// begin starts a scenario test: at its end, every audit log and mailproxy
// output is checked for passwords.
func (e *env) begin(t *testing.T) *env {
	t.Helper()
	t.Cleanup(func() { e.checkLogsForSecrets(t) })
	return e
}

func (e *env) checkLogsForSecrets(t *testing.T) {
	t.Helper()
	for _, mp := range append([]*mailproxy{e.mp}, e.extra...) {
		for _, l := range []*logFile{mp.audit, mp.stderr} {
			b, _ := os.ReadFile(l.path)
			e.checkNoSecretsIn(t, l.name+" ("+l.path+")", b)
		}
	}
}

func (e *env) teardown() error {
	var errs []error
	for _, mp := range append(e.extra, e.mp) {
		if mp != nil {
			errs = append(errs, mp.stop())
		}
	}
	if e.prov != nil {
		errs = append(errs, e.prov.stop())
	}
	if reaper != nil {
		errs = append(errs, reaper.stop())
	}
	// The last word on privacy, over every log the suite kept.
	for _, mp := range append(e.extra, e.mp) {
		if mp == nil {
			continue
		}
		for _, l := range []*logFile{mp.audit, mp.stderr} {
			b, _ := os.ReadFile(l.path)
			for _, sec := range e.secrets {
				if bytes.Contains(b, []byte(sec)) {
					errs = append(errs, fmt.Errorf("PRIVACY: %s contains a password", l.path))
					break
				}
			}
		}
	}
	if *keep {
		fmt.Printf("e2e: kept %s\n", e.work)
	} else if err := os.RemoveAll(e.work); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pythonPath prefers Debian's python3 (what CI has) over one on PATH.
func pythonPath() (string, error) {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3", nil
	}
	return exec.LookPath("python3")
}

// printVersions prints the versions of the servers and clients the suite
// ran against (README.md, "Tested against").
func printVersions() {
	py, _ := pythonPath()
	cmds := [][]string{
		{"dovecot", "--version"},
		{"postconf", "-d", "-h", "mail_version"},
		{"haproxy", "-v"},
		{"openssl", "version"},
		{"curl", "--version"},
		{"swaks", "--version"},
		{"mbsync", "--version"},
		{"fetchmail", "--version"},
		{"strace", "-V"},
		{"dpkg-query", "-W", "microsocks"}, // microsocks has no --version
		{"gpg", "--version"},
		{py, "--version"},
		{"go", "version"},
	}
	for _, c := range cmds {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		line := ""
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			// fetchmail warns about root first; swaks prints a licence.
			if l != "" && !strings.Contains(l, "WARNING") {
				line = l
				break
			}
		}
		fmt.Printf("e2e: version: %-9s %s\n", filepath.Base(c[0]), line)
	}
}
