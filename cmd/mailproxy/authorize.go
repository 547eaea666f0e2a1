package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"mailproxy/config"
	"mailproxy/grant"
	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// stdin is where authorize reads the local password and `trust accept`
// its confirmation; tests replace it.
var stdin io.Reader = os.Stdin

// minLocalPassword is the shortest local password authorize accepts: the
// password is all that protects the stored grant if the file is copied.
const minLocalPassword = 8

type authorizeFlags struct {
	fs       *flag.FlagSet
	path     *string
	provider *string
	device   *bool
}

func newAuthorizeFlags(stderr io.Writer) *authorizeFlags {
	fs := newFlags("authorize", stderr)
	return &authorizeFlags{fs: fs,
		path:     fs.String("config", "", "configuration file (default: the first of the default locations that exists)"),
		provider: fs.String("provider", "", "the provider to authorize mailproxy at (it needs a [provider.oauth2] table)"),
		device:   fs.Bool("device", false, "use the device flow: a code to enter on any device with a browser"),
	}
}

func authorizeCmd(args []string, stdout, stderr io.Writer) int {
	f := newAuthorizeFlags(stderr)
	fs, path, provider, device := f.fs, f.path, f.provider, f.device
	if code, ok := parseFlags("authorize", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 || *provider == "" {
		fmt.Fprintln(stderr, "usage: mailproxy authorize [-config FILE] -provider NAME [-device] ACCOUNT")
		return exitUsage
	}
	account := fs.Arg(0)
	// Before the provider issues a grant: a name no record can hold would
	// throw the grant away (live, and counted against the provider's
	// limit of grants per client).
	if err := grant.CheckName(account); err != nil {
		fmt.Fprintf(stderr, "mailproxy authorize: the account %q %v\n", account, err)
		return exitUsage
	}
	if !checkEnvironment(stderr) {
		return exitUsage
	}
	c, err := loadConfig(*path, *provider)
	if err != nil {
		reportConfigError(err, stderr)
		return exitUsage
	}
	p := c.Provider(*provider)
	if p == nil || p.OAuth2 == nil {
		fmt.Fprintf(stderr, "mailproxy authorize: provider %q has no [provider.oauth2] with a client_id in the configuration (see the README, \"Gmail and Outlook (OAuth2)\")\n", *provider)
		return exitUsage
	}
	store, err := tokenStore()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	audit, closer, err := openAudit(c, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	defer closer.Close()
	defer audit.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sa := audit.Session("authorize", policy.HTTPS)
	defer sa.FlushDenied() // no session.end: the count of refusals not written, if any
	flow := &grant.Flow{
		Provider: p,
		Client:   (&tlsconf.Dialer{Trust: trustOrNil()}).HTTPClient(p, sa),
		Audit:    sa,
		Out:      stdout,
		Open:     desktopOpener(),
	}
	run := flow.Loopback
	if *device {
		run = flow.Device
	}
	tok, err := run(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy authorize:", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "\nmailproxy is authorized for %s at %s.\n", policy.Escape(account), p.Name)
	pw, err := readLocalPassword(ctx, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy authorize:", err)
		return exitFailure
	}
	rec, _, err := grant.Seal(p.Name, account, tok.RefreshToken, pw, grant.DefaultKDF, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy authorize:", err)
		return exitFailure
	}
	if err := store.Save(rec); err != nil {
		fmt.Fprintln(stderr, "mailproxy authorize:", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "Stored, encrypted with that password, in %s.\nYour mail apps log in to mailproxy as %s with that password.\n", store.Dir, policy.Escape(account))
	return exitOK
}

// tokenStore is the grant store in the data folder.
func tokenStore() (*grant.Store, error) {
	d, err := config.DataDir()
	if err != nil {
		return nil, err
	}
	return &grant.Store{Dir: filepath.Join(d, "tokens")}, nil
}

// passwordAttempts is how many times authorize asks for the local
// password on a terminal before it gives up: a typing mistake must not
// cost the grant the provider has just issued.
const passwordAttempts = 3

// readLocalPassword asks for the password the mail apps will use: twice
// without echo on a terminal (again, up to passwordAttempts times, when
// the two differ or the password is not acceptable), else one line of
// standard input.
func readLocalPassword(ctx context.Context, out io.Writer) (string, error) {
	f, ok := stdin.(*os.File)
	if !ok || !isTerminal(f) {
		line, err := bufio.NewReaderSize(stdin, 1024).ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			return "", errors.New("no local password on standard input (one line)")
		}
		pw := strings.TrimRight(line, "\r\n")
		if err := checkLocalPassword(pw); err != nil {
			return "", fmt.Errorf("%v; nothing was stored", err)
		}
		return pw, nil
	}
	fmt.Fprintf(out, "Choose the password your mail apps will log in to mailproxy with (at least %d characters).\n", minLocalPassword)
	for attempt := 1; ; attempt++ {
		a, err := readHidden(ctx, f, out, "Local password: ")
		if err != nil {
			return "", err
		}
		b, err := readHidden(ctx, f, out, "Again: ")
		if err != nil {
			return "", err
		}
		if a != b {
			err = errors.New("the two passwords differ")
		} else {
			err = checkLocalPassword(a)
		}
		if err == nil {
			return a, nil
		}
		if attempt == passwordAttempts {
			return "", fmt.Errorf("%v; nothing was stored", err)
		}
		fmt.Fprintf(out, "%v. Try again.\n", upperFirst(err.Error()))
	}
}

// checkLocalPassword refuses a local password no mail app could send, or
// too short to protect the stored grant.
func checkLocalPassword(pw string) error {
	if strings.ContainsAny(pw, "\x00\r\n") {
		return errors.New("the local password must not hold NUL, CR or LF: no mail app could send it")
	}
	if len([]rune(pw)) < minLocalPassword {
		return fmt.Errorf("the local password must have at least %d characters", minLocalPassword)
	}
	return nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// desktopOpener returns a function that opens a URL in the desktop's
// browser, or nil where there is no desktop. mailproxy never fetches the
// URL itself.
func desktopOpener() func(string) error {
	name := ""
	switch runtime.GOOS {
	case "darwin":
		name = "open"
	case "linux", "freebsd", "openbsd", "netbsd":
		if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
			return nil
		}
		name = "xdg-open"
	default:
		return nil
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return nil
	}
	return func(u string) error {
		cmd := exec.Command(path, u)
		if err := cmd.Start(); err != nil {
			return err
		}
		go cmd.Wait()
		return nil
	}
}
