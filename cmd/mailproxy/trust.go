package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"mailproxy/config"
	"mailproxy/policy"
	"mailproxy/tlsconf"
	"mailproxy/tlsconf/trust"
)

// openTrust opens the trust store in config.DataDir(). `run` and `check`
// use it, so trust on first use is on by default.
func openTrust() (*trust.Store, error) {
	dir, err := config.DataDir()
	if err != nil {
		return nil, err
	}
	return trust.Open(dir), nil
}

// trustOrNil is the trust store, or nil (trust on first use off) when
// there is no folder for it; `check` then prints tofu off.
func trustOrNil() *trust.Store {
	s, err := openTrust()
	if err != nil {
		return nil
	}
	return s
}

const trustUsage = `Usage:
  mailproxy trust                                     list the remembered hosts and anchors
  mailproxy trust accept [-config FILE] [-provider NAME] [-yes] HOST
                                                      connect, show the chain, remember its anchor
  mailproxy trust forget HOST                         forget HOST's anchor
`

func trustCmd(args []string, stdout, stderr io.Writer) int {
	store, err := openTrust()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy trust:", err)
		return exitFailure
	}
	sub := "list"
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "list":
		if len(args) > 0 {
			fmt.Fprint(stderr, trustUsage)
			return exitUsage
		}
		return trustList(store, stdout, stderr)
	case "accept":
		return trustAccept(store, args, stdout, stderr)
	case "forget":
		if len(args) != 1 {
			fmt.Fprint(stderr, trustUsage)
			return exitUsage
		}
		host := policy.NormalizeHost(args[0])
		gone, err := store.Forget(host)
		switch {
		case err != nil:
			fmt.Fprintln(stderr, "mailproxy trust:", err)
			return exitFailure
		case !gone:
			fmt.Fprintf(stderr, "mailproxy trust: no anchor remembered for %s\n", host)
			return exitFailure
		}
		fmt.Fprintf(stdout, "forgot the anchor of %s; the next connection remembers the one it finds\n", host)
		return exitOK
	case "help", "-h", "-help", "--help":
		c, _ := lookupCommand("trust")
		writeCommandHelp(stdout, c)
		fmt.Fprint(stdout, "\n"+trustUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "mailproxy trust: unknown subcommand %q\n%s", sub, trustUsage)
	return exitUsage
}

func trustList(store *trust.Store, stdout, stderr io.Writer) int {
	list, err := store.List()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy trust:", err)
		return exitFailure
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "no anchors remembered yet (%s)\n", store.Path())
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tANCHOR\tFIRST SEEN\tCERTIFICATE AUTHORITY")
	for _, a := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Host, a.SHA256, a.FirstSeen.Format("2006-01-02"), a.Subject)
	}
	tw.Flush()
	return exitOK
}

// trustFlags are the flags of "trust accept" (list and forget have none).
type trustFlags struct {
	fs             *flag.FlagSet
	path, provider *string
	yes            *bool
	timeout        *time.Duration
}

func newTrustFlags(stderr io.Writer) *trustFlags {
	fs := newFlags("trust accept", stderr)
	return &trustFlags{fs: fs,
		path:     fs.String("config", "", "configuration file (default: as for run)"),
		provider: fs.String("provider", "", "built-in provider, or the one provider of the file"),
		yes:      fs.Bool("yes", false, "replace the remembered anchor without asking"),
		timeout:  fs.Duration("timeout", 15*time.Second, "time allowed for the connection"),
	}
}

// trustAccept connects to HOST under its provider's policy (chain and name
// verified as always, trust on first use aside), shows the verified chain,
// and on confirmation remembers its anchor in place of the old one.
func trustAccept(store *trust.Store, args []string, stdout, stderr io.Writer) int {
	f := newTrustFlags(stderr)
	fs, path, provider, yes, timeout := f.fs, f.path, f.provider, f.yes, f.timeout
	host, err := parseWithOneArg(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c, _ := lookupCommand("trust")
		writeCommandHelp(stdout, c)
		return exitOK
	}
	if err != nil {
		fmt.Fprint(stderr, trustUsage)
		return exitUsage
	}
	// It stores an anchor for good: never under weakened X.509 checks.
	if !checkEnvironment(stderr) {
		return exitFailure
	}
	host = policy.NormalizeHost(host)
	c, err := loadConfig(*path, *provider)
	if err != nil {
		reportConfigError(err, stderr)
		return exitUsage
	}
	p, ep, ok := endpointOn(c, host)
	if !ok {
		fmt.Fprintf(stderr, "mailproxy trust: no configured provider connects to %s\n", host)
		return exitUsage
	}
	d := &tlsconf.Dialer{Timeout: *timeout} // no store: the anchor is what we are deciding on
	up, err := d.Dial(context.Background(), p, ep, nil)
	if err != nil {
		fmt.Fprintf(stderr, "mailproxy trust: %s: %v\n", ep, err)
		return exitFailure
	}
	cs := up.ConnectionState()
	up.Close()
	old, known, err := store.Lookup(host)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy trust:", err)
		return exitFailure
	}
	root := tlsconf.Anchor(cs, old.SHA256)
	rec := tlsconf.AnchorRecord(host, root, time.Now())
	fmt.Fprintf(stdout, "%s presents this chain (verified):\n", ep)
	printChain(stdout, chainTo(cs.VerifiedChains, root))
	if known {
		fmt.Fprintf(stdout, "remembered anchor: %s  %s  (since %s)\n", old.SHA256, old.Subject, old.FirstSeen.Format("2006-01-02"))
	} else {
		fmt.Fprintln(stdout, "remembered anchor: none")
	}
	fmt.Fprintf(stdout, "new anchor:        %s  %s\n", rec.SHA256, rec.Subject)
	if known && old.SHA256 == rec.SHA256 {
		fmt.Fprintf(stdout, "%s already has this anchor; nothing to do\n", host)
		return exitOK
	}
	if !*yes {
		fmt.Fprintf(stdout, "Remember this anchor for %s? Only if you expected the change (the provider changed its certificate authority). [y/N] ", host)
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if !strings.HasSuffix(line, "\n") {
			fmt.Fprintln(stdout)
		}
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			fmt.Fprintln(stdout, "nothing changed")
			return exitFailure
		}
	}
	if _, _, err := store.Replace(rec); err != nil {
		fmt.Fprintln(stderr, "mailproxy trust:", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "remembered %s for %s\n", rec.SHA256, host)
	return exitOK
}

// parseWithOneArg parses flags given before or after the one positional
// argument ("accept HOST -yes" and "accept -yes HOST").
func parseWithOneArg(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		return "", errors.New("missing argument")
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", errors.New("too many arguments")
	}
	return arg, nil
}

// endpointOn finds what to connect to on host, for trust accept: a
// configured endpoint on it (in protocol order); else the provider's
// OAuth2 endpoint on it (HTTPS); else, for a host on a provider's
// allowlist (a login may name one), the provider's first endpoint moved
// to that host, as a login would. Every host mailproxy may connect to,
// and so may refuse for a changed anchor, can be accepted.
func endpointOn(c *config.Config, host string) (*policy.Provider, policy.Endpoint, bool) {
	for _, p := range c.Providers {
		for _, proto := range policy.Protos {
			if ep, ok := p.Endpoint(proto); ok && ep.Host == host {
				return p, ep, true
			}
		}
	}
	for _, p := range c.Providers {
		if o := p.OAuth2; o != nil {
			for _, u := range []string{o.TokenURL, o.DeviceAuthURL, o.AuthURL} {
				if ep, err := p.OAuth2Endpoint(u); u != "" && err == nil && ep.Host == host {
					return p, ep, true
				}
			}
		}
	}
	for _, p := range c.Providers {
		if !p.Allows(host) {
			continue
		}
		for _, proto := range policy.Protos {
			if ep, ok := p.Endpoint(proto); ok {
				ep.Host = host
				return p, ep, true
			}
		}
	}
	return nil, policy.Endpoint{}, false
}

// chainTo is the verified chain that ends in root.
func chainTo(chains [][]*x509.Certificate, root *x509.Certificate) []*x509.Certificate {
	for _, ch := range chains {
		if len(ch) > 0 && ch[len(ch)-1] == root {
			return ch
		}
	}
	return nil
}

func printChain(w io.Writer, chain []*x509.Certificate) {
	for i, c := range chain {
		role := "intermediate"
		switch {
		case i == 0:
			role = "leaf"
		case i == len(chain)-1:
			role = "anchor"
		}
		fmt.Fprintf(w, "  %d %-12s %s\n", i, role, c.Subject)
		fmt.Fprintf(w, "    %-12s %s\n    %-12s %s\n", "key", tlsconf.FormatPin(tlsconf.SPKIHash(c)), "expires", c.NotAfter.UTC().Format(time.RFC3339))
	}
}
