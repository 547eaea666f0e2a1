//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// user is a mailbox at the provider. The passwords are fixed test values;
// they are never printed (every output the suite shows goes through
// env.redact) and the audit log is checked to contain none of them.
type user struct {
	name string
	pass string
}

var (
	alice = user{"alice@provider.test", "e2e-Alice-Secret-4Rq8wZ"}
	bob   = user{"bob@provider.test", "e2e-Bob-Secret-9Tn3vK"}
	// wrongPassword is what the wrong-password scenario types.
	wrongPassword = "e2e-Wrong-Secret-2Lp7xM"
)

// Upstream modes: how mailproxy reaches the provider.
const (
	modeTLS      = "tls"      // implicit TLS: imaps, pop3s, smtps
	modeSTARTTLS = "starttls" // STARTTLS/STLS on the plain port
)

var modes = []string{modeTLS, modeSTARTTLS}

// providerPorts are the provider's ports on 127.0.0.1, picked at start.
type providerPorts struct {
	IMAPS       int // Dovecot, implicit TLS
	IMAP        int // HAProxy -> Dovecot, STARTTLS
	IMAPBackend int // Dovecot's PROXY-protocol listener behind HAProxy
	POP3S       int
	POP3        int
	POP3Backend int
	SMTPS       int // Postfix, implicit TLS
	Submission  int // Postfix, STARTTLS
	RSAIMAPS    int // the second Dovecot: TLS 1.2, RSA key exchange only
}

// provider is the private mail provider: two Dovecots, Postfix and
// HAProxy, configured by provider.sh under dir.
type provider struct {
	dir    string
	ports  providerPorts
	caFile string
	procs  []*proc // in start order

	dovecotLog    *logFile
	dovecotRSALog *logFile
	postfixLog    *logFile
}

func (p *provider) logs() []*logFile {
	return []*logFile{p.dovecotLog, p.postfixLog, p.dovecotRSALog}
}

// upstream returns the provider endpoint mailproxy uses for proto in mode,
// as a configuration URL, and its port.
func (p *provider) upstream(proto, mode string) (string, int) {
	var scheme string
	var port int
	switch proto + "/" + mode {
	case "imap/tls":
		scheme, port = "imaps", p.ports.IMAPS
	case "imap/starttls":
		scheme, port = "imap", p.ports.IMAP
	case "pop3/tls":
		scheme, port = "pop3s", p.ports.POP3S
	case "pop3/starttls":
		scheme, port = "pop3", p.ports.POP3
	case "smtp/tls":
		scheme, port = "smtps", p.ports.SMTPS
	case "smtp/starttls":
		scheme, port = "smtp", p.ports.Submission
	default:
		panic("no upstream " + proto + "/" + mode)
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), port
}

// startProvider configures the provider under dir and starts it.
func startProvider(dir string) (p *provider, err error) {
	ports, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	p = &provider{
		dir: dir,
		ports: providerPorts{
			IMAPS: ports[0], IMAP: ports[1], IMAPBackend: ports[2],
			POP3S: ports[3], POP3: ports[4], POP3Backend: ports[5],
			SMTPS: ports[6], Submission: ports[7], RSAIMAPS: ports[8],
		},
		caFile:        filepath.Join(dir, "tls", "ca.pem"),
		dovecotLog:    &logFile{"dovecot", filepath.Join(dir, "dovecot", "dovecot.log")},
		dovecotRSALog: &logFile{"dovecot (TLS 1.2 RSA-only instance)", filepath.Join(dir, "dovecot-rsa", "dovecot.log")},
		postfixLog:    &logFile{"postfix", filepath.Join(dir, "postfix", "postfix.log")},
	}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	env := []string{
		"E2E_PORT_IMAPS=" + strconv.Itoa(p.ports.IMAPS),
		"E2E_PORT_IMAP=" + strconv.Itoa(p.ports.IMAP),
		"E2E_PORT_IMAP_BACKEND=" + strconv.Itoa(p.ports.IMAPBackend),
		"E2E_PORT_POP3S=" + strconv.Itoa(p.ports.POP3S),
		"E2E_PORT_POP3=" + strconv.Itoa(p.ports.POP3),
		"E2E_PORT_POP3_BACKEND=" + strconv.Itoa(p.ports.POP3Backend),
		"E2E_PORT_SMTPS=" + strconv.Itoa(p.ports.SMTPS),
		"E2E_PORT_SUBMISSION=" + strconv.Itoa(p.ports.Submission),
		"E2E_PORT_RSA_IMAPS=" + strconv.Itoa(p.ports.RSAIMAPS),
		"E2E_ALICE_PASS=" + alice.pass,
		"E2E_BOB_PASS=" + bob.pass,
	}
	if err := runQuiet(env, "sh", "provider.sh", "configure", dir); err != nil {
		return p, err
	}
	pf := filepath.Join(dir, "postfix")
	// "postfix check" creates the queue directories with their owners.
	if err := runQuiet(nil, "postfix", "-c", pf, "check"); err != nil {
		return p, err
	}
	daemonDir, err := exec.Command("postconf", "-c", pf, "-h", "daemon_directory").Output()
	if err != nil {
		return p, fmt.Errorf("postconf daemon_directory: %w", err)
	}
	logs := filepath.Join(dir, "out")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return p, err
	}

	type server struct {
		name     string
		ownGroup bool
		env      []string
		argv     []string
		ports    []int
		socket   string
	}
	servers := []server{
		{name: "dovecot", ownGroup: true,
			argv:   []string{"dovecot", "-F", "-c", filepath.Join(dir, "dovecot", "dovecot.conf")},
			ports:  []int{p.ports.IMAPS, p.ports.IMAPBackend, p.ports.POP3S, p.ports.POP3Backend},
			socket: filepath.Join(dir, "dovecot", "run", "auth-postfix")},
		{name: "dovecot-rsa", ownGroup: true,
			argv:  []string{"dovecot", "-F", "-c", filepath.Join(dir, "dovecot-rsa", "dovecot.conf")},
			ports: []int{p.ports.RSAIMAPS}},
		// Postfix's master leads its own session (setsid), so no group
		// is made for it; "-s" keeps it in the foreground.
		{name: "postfix", ownGroup: false,
			env:   []string{"MAIL_CONFIG=" + pf},
			argv:  []string{filepath.Join(strings.TrimSpace(string(daemonDir)), "master"), "-c", pf, "-s"},
			ports: []int{p.ports.SMTPS, p.ports.Submission}},
		{name: "haproxy", ownGroup: true,
			argv:  []string{"haproxy", "-db", "-f", filepath.Join(dir, "haproxy", "haproxy.cfg")},
			ports: []int{p.ports.IMAP, p.ports.POP3}},
	}
	for _, s := range servers {
		pr, err := startProc(s.name, filepath.Join(logs, s.name+".out"), s.ownGroup, s.env, s.argv...)
		if err != nil {
			return p, err
		}
		p.procs = append(p.procs, pr)
	}
	for i, s := range servers {
		for _, port := range s.ports {
			if err := waitPort(p.procs[i], port, 20*time.Second); err != nil {
				return p, err
			}
		}
		if s.socket != "" {
			if err := waitFile(p.procs[i], s.socket, 20*time.Second); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// stop stops every server (all at once: Dovecot takes seconds to stop)
// and reports every failure.
func (p *provider) stop() error {
	errc := make(chan error, len(p.procs))
	for _, pr := range p.procs {
		go func() { errc <- pr.stop(10 * time.Second) }()
	}
	var errs []string
	for range p.procs {
		if err := <-errc; err != nil {
			errs = append(errs, err.Error())
		}
	}
	p.procs = nil
	if len(errs) > 0 {
		return fmt.Errorf("stopping the provider: %s", strings.Join(errs, "; "))
	}
	return nil
}

// runQuiet runs a setup command and returns its output only if it fails.
func runQuiet(env []string, argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}
