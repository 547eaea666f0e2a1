// Command mailproxy is a local relay for mail apps: apps speak plaintext
// IMAP, POP3 and SMTP to it on localhost, and it speaks to the mail provider,
// and only to the provider, over TLS it polices itself. See README.md.
//
// This file and its siblings only parse flags, load the configuration and
// wire packages together; the logic lives in policy, tlsconf, config and
// proxy.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"mailproxy/config"
	"mailproxy/policy"
	"mailproxy/tlsconf"
)

// Exit codes (docs/design.md, command line contract).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one subcommand. The dispatch, `mailproxy help` and `mailproxy
// help NAME` all read the table below, so a new subcommand is one line
// there plus its own file.
type command struct {
	name    string
	args    string // what follows the flags in the synopsis, e.g. "[HOST:PORT...]"
	summary string // one line
	// flags returns a fresh flag set with the command's flags (nil: none),
	// built by the same function the command parses its arguments with.
	flags func() *flag.FlagSet
	run   func(args []string, stdout, stderr io.Writer) int
}

// commands are the subcommands, in the order help lists them.
func commands() []command {
	return []command{
		{"run", "", "serve (the default command)", func() *flag.FlagSet { return newRunFlags(io.Discard).fs }, runCmd},
		{"check", "[HOST:PORT...]", "connect to a provider's endpoints and show the TLS they negotiate (never logs in)", func() *flag.FlagSet { return newCheckFlags(io.Discard).fs }, checkCmd},
		{"report", "AUDITFILE", "summarise an audit log: sessions, TLS seen, refusals", func() *flag.FlagSet { return newReportFlags(io.Discard).fs }, reportCmd},
		{"authorize", "ACCOUNT", "OAuth2: authorize mailproxy at a provider for ACCOUNT and set the local password apps use", func() *flag.FlagSet { return newAuthorizeFlags(io.Discard).fs }, authorizeCmd},
		{"tokens", "[remove [-provider NAME] ACCOUNT]", "list the stored OAuth2 authorizations (no secrets), or remove one", func() *flag.FlagSet { return newTokensFlags(io.Discard).fs }, tokensCmd},
		{"trust", "[accept HOST | forget HOST]", "list the remembered trust anchors (trust on first use), accept a changed one, or forget one", func() *flag.FlagSet { return newTrustFlags(io.Discard).fs }, trustCmd},
		{"demo", "", "a local demo provider behind mailproxy", func() *flag.FlagSet { return newDemoFlags(io.Discard).fs }, demoCmd},
		{"cert", "", "print the local TLS certificate (creating it once)", func() *flag.FlagSet { return newCertFlags(io.Discard).fs }, certCmd},
		{"config check", "", "validate a configuration file", func() *flag.FlagSet { return newConfigCheckFlags(io.Discard).fs }, configCheckCmd},
		{"version", "", "print the version, the Go version and the module versions", nil, versionCmd},
		{"help", "[COMMAND]", "list the commands, or show one command's flags", nil, helpCmd},
	}
}

// lookupCommand finds a command by its name, or by the first word of a
// two-word name ("config" finds "config check").
func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name || strings.HasPrefix(c.name, name+" ") {
			return c, true
		}
	}
	return command{}, false
}

func main() {
	os.Exit(mainArgs(os.Args[1:], os.Stdout, os.Stderr))
}

// mainArgs runs one command line and returns the exit code.
func mainArgs(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			return helpCmd(args[1:], stdout, stderr)
		}
	}
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	c, ok := lookupCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "mailproxy: unknown command %q\n\n", name)
		writeOverview(stderr)
		return exitUsage
	}
	if _, second, two := strings.Cut(c.name, " "); two {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			return helpCmd([]string{name}, stdout, stderr)
		}
		if len(args) == 0 || args[0] != second {
			fmt.Fprintf(stderr, "mailproxy %s: the only subcommand is %q\n\n", name, c.name)
			writeCommandHelp(stderr, c)
			return exitUsage
		}
		args = args[1:]
	}
	return c.run(args, stdout, stderr)
}

// writeOverview lists the commands.
func writeOverview(w io.Writer) {
	fmt.Fprintf(w, "mailproxy: a privacy-preserving local relay for mail apps\n\nUsage:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  mailproxy %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, `
"mailproxy help COMMAND" (or "mailproxy COMMAND -h") shows a command's flags.
Built-in providers: %s
Without -config, mailproxy reads $XDG_CONFIG_HOME/mailproxy/mailproxy.toml
or /etc/mailproxy/mailproxy.toml if one exists.
`, strings.Join(config.PresetNames(), ", "))
}

// writeCommandHelp prints one command's synopsis and flags.
func writeCommandHelp(w io.Writer, c command) {
	var fs *flag.FlagSet
	if c.flags != nil {
		fs = c.flags()
	}
	synopsis := "mailproxy " + c.name
	if fs != nil && hasFlags(fs) {
		synopsis += " [flags]"
	}
	if c.args != "" {
		synopsis += " " + c.args
	}
	fmt.Fprintf(w, "usage: %s\n\n%s\n", synopsis, c.summary)
	if fs != nil && hasFlags(fs) {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func helpCmd(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		writeOverview(stdout)
		return exitOK
	case 1:
		if c, ok := lookupCommand(args[0]); ok {
			writeCommandHelp(stdout, c)
			return exitOK
		}
		fmt.Fprintf(stderr, "mailproxy help: unknown command %q\n\n", args[0])
		writeOverview(stderr)
		return exitUsage
	}
	fmt.Fprintln(stderr, "usage: mailproxy help [COMMAND]")
	return exitUsage
}

func versionCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: mailproxy version")
		return exitUsage
	}
	fmt.Fprint(stdout, version())
	return exitOK
}

// version is the program's version, the Go version it was built with,
// and the version of every module linked in.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "mailproxy devel\n"
	}
	v := "devel"
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mailproxy %s\n%s\n", v, bi.GoVersion)
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		fmt.Fprintf(&b, "%s %s\n", d.Path, d.Version)
	}
	return b.String()
}

// newFlags returns a flag set that reports errors as usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mailproxy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses a command's arguments. -h and -help print the
// command's help on stdout (ok false, exit 0); a bad flag prints the error
// and the help on stderr (ok false, exit 2).
func parseFlags(name string, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.Usage = func() {}
	fs.SetOutput(stderr)
	err := fs.Parse(args)
	if err == nil {
		return exitOK, true
	}
	c, _ := lookupCommand(name)
	if errors.Is(err, flag.ErrHelp) {
		writeCommandHelp(stdout, c)
		return exitOK, false
	}
	fmt.Fprintln(stderr)
	writeCommandHelp(stderr, c)
	return exitUsage, false
}

// loadConfig finds the configuration: the -config file; else a file in
// the default locations; else the -provider preset. -provider narrows a
// file to one provider (or adds the preset of that name).
func loadConfig(path, provider string) (*config.Config, error) {
	if path == "" {
		for _, p := range config.DefaultPaths() {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		if provider == "" {
			return nil, &noConfigError{}
		}
		return config.Preset(provider)
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if provider != "" {
		return c.WithProvider(provider)
	}
	return c, nil
}

// noConfigError says that no configuration was given or found.
type noConfigError struct{}

func (*noConfigError) Error() string {
	return fmt.Sprintf("no configuration: give -provider NAME (one of %s) or -config FILE, or create %s",
		strings.Join(config.PresetNames(), ", "), config.DefaultPaths()[0])
}

// reportConfigError prints a configuration error and audits the policy
// refusals behind it (an endpoint outside its provider's hosts).
func reportConfigError(err error, stderr io.Writer) {
	var es config.Errors
	if !errors.As(err, &es) {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return
	}
	fmt.Fprintln(stderr, "mailproxy: invalid configuration:")
	fmt.Fprintln(stderr, indent(err.Error()))
	a := policy.NewAudit(stderr, slog.LevelInfo)
	for _, e := range es {
		if e.Err != nil {
			a.Denied(e.Err)
		}
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// checkEnvironment refuses a GODEBUG that weakens TLS.
func checkEnvironment(stderr io.Writer) bool {
	if err := tlsconf.CheckGODEBUG(os.Getenv("GODEBUG")); err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return false
	}
	return true
}

// openAudit opens the audit sink the configuration names.
func openAudit(c *config.Config, stdout, stderr io.Writer, observers ...policy.Observer) (*policy.Audit, io.Closer, error) {
	switch c.AuditPath {
	case "", "stderr":
		return policy.NewAudit(stderr, c.Level, observers...), io.NopCloser(nil), nil
	case "stdout":
		return policy.NewAudit(stdout, c.Level, observers...), io.NopCloser(nil), nil
	}
	f, err := os.OpenFile(c.AuditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the audit log: %w", err)
	}
	return policy.NewAudit(f, c.Level, observers...), f, nil
}
