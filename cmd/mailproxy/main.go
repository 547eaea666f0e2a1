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

const usage = `mailproxy: a privacy-preserving local relay for mail apps

Usage:
  mailproxy [run] [-config FILE] [-provider NAME]   serve (the default command)
  mailproxy check [-config FILE] [-provider NAME] [-json] [-deep] [-tls | -starttls -proto imap|pop3|smtp] [HOST:PORT...]
  mailproxy demo [-port-base N]                      a local demo provider behind mailproxy
  mailproxy cert [-config FILE]                      print the local TLS certificate
  mailproxy trust [accept HOST [-yes] | forget HOST] the remembered trust anchors (trust on first use)
  mailproxy config check -config FILE                validate a configuration file
  mailproxy version

Built-in providers: ` + "%s" + `
Without -config, mailproxy reads $XDG_CONFIG_HOME/mailproxy/mailproxy.toml
or /etc/mailproxy/mailproxy.toml if one exists.
`

func main() {
	os.Exit(mainArgs(os.Args[1:], os.Stdout, os.Stderr))
}

// mainArgs runs one command line and returns the exit code.
func mainArgs(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCmd(args, stdout, stderr)
	case "check":
		return checkCmd(args, stdout, stderr)
	case "demo":
		return demoCmd(args, stdout, stderr)
	case "cert":
		return certCmd(args, stdout, stderr)
	case "trust":
		return trustCmd(args, stdout, stderr)
	case "config":
		if len(args) == 0 || args[0] != "check" {
			fmt.Fprintln(stderr, "mailproxy config: the only subcommand is \"config check -config FILE\"")
			return exitUsage
		}
		return configCheckCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprintf(stdout, usage, strings.Join(config.PresetNames(), ", "))
		return exitOK
	}
	fmt.Fprintf(stderr, "mailproxy: unknown command %q\n\n"+usage, cmd, strings.Join(config.PresetNames(), ", "))
	return exitUsage
}

func version() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
		return "mailproxy " + v + " (" + bi.GoVersion + ")"
	}
	return "mailproxy " + v
}

// newFlags returns a flag set that reports errors as usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mailproxy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
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
			return nil, fmt.Errorf("no configuration: give -provider NAME (one of %s) or -config FILE, or create %s",
				strings.Join(config.PresetNames(), ", "), config.DefaultPaths()[0])
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
func openAudit(c *config.Config, stdout, stderr io.Writer) (*policy.Audit, io.Closer, error) {
	switch c.AuditPath {
	case "", "stderr":
		return policy.NewAudit(stderr, c.Level), io.NopCloser(nil), nil
	case "stdout":
		return policy.NewAudit(stdout, c.Level), io.NopCloser(nil), nil
	}
	f, err := os.OpenFile(c.AuditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the audit log: %w", err)
	}
	return policy.NewAudit(f, c.Level), f, nil
}
