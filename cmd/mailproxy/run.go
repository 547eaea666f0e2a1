package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"mailproxy/config"
	"mailproxy/grant"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/imap"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/smtp"
	"mailproxy/status"
	"mailproxy/tlsconf"
)

// shutdownGrace is how long running sessions may finish after SIGINT or
// SIGTERM; a second signal ends them at once.
const shutdownGrace = 30 * time.Second

// fronts are the protocol fronts this build serves.
func fronts() map[policy.Proto]proxy.Front {
	return map[policy.Proto]proxy.Front{
		policy.IMAP: imap.Front{},
		policy.POP3: pop3.Front{},
		policy.SMTP: smtp.Front{},
	}
}

type runFlags struct {
	fs             *flag.FlagSet
	path, provider *string
}

func newRunFlags(stderr io.Writer) *runFlags {
	fs := newFlags("run", stderr)
	return &runFlags{fs: fs,
		path:     fs.String("config", "", "configuration file (default: the first of the default locations that exists)"),
		provider: fs.String("provider", "", "built-in provider to serve, or the one provider of the file to serve"),
	}
}

func runCmd(args []string, stdout, stderr io.Writer) int {
	f := newRunFlags(stderr)
	fs, path, provider := f.fs, f.path, f.provider
	if code, ok := parseFlags("run", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailproxy run: unexpected argument %q\n", fs.Arg(0))
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
	// The status page and /metrics count the audit events as they are
	// written, from the start, whether or not a page is configured yet (a
	// reload may add one).
	collector := status.NewCollector()
	audit, closer, err := openAudit(c, stdout, stderr, collector.Observe)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	defer closer.Close()
	defer audit.Close() // pending refusal counts, before the file closes

	// Signals are caught before any listener is up: a SIGHUP sent as soon
	// as listener.start appears must reload, not kill.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)

	store, err := openTrust()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy: the trust store:", err)
		return exitFailure
	}
	dialer := &tlsconf.Dialer{Trust: store}
	srv := &proxy.Server{Audit: audit, Dialer: dialer, Fronts: fronts(), LocalTLS: localTLS(c)}
	if tokens, err := tokenStore(); err == nil {
		// OAuth2 providers' logins; without a data folder they fail.
		srv.Grants = &grant.Tokens{Store: tokens, Dialer: dialer}
	}
	page := &status.Server{Collector: collector, Snapshot: srv.Snapshot, Audit: audit}
	defer page.Close()
	if err := page.Start(statusAddress(c)); err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	ctx := context.Background()
	warnLocalCertChange(c, stderr)
	if err := srv.Start(ctx, c.Setup()); err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	return serveUntilSignal(ctx, sig, srv, page, c, *path, *provider, audit, stderr)
}

// statusAddress is where the configuration puts the status page ("": none).
func statusAddress(c *config.Config) (string, policy.Access) {
	if c.Status == nil {
		return "", policy.Access{}
	}
	return c.Status.Address, c.Status.Access
}

// serveUntilSignal waits for SIGINT/SIGTERM (graceful stop) and SIGHUP
// (reload the configuration).
func serveUntilSignal(ctx context.Context, sig <-chan os.Signal, srv *proxy.Server, page *status.Server, c *config.Config, path, provider string, audit *policy.Audit, stderr io.Writer) int {
	for {
		select {
		case err := <-srv.Err():
			fmt.Fprintln(stderr, "mailproxy:", err)
			shutdown(srv, sig)
			return exitFailure
		case s := <-sig:
			if s == syscall.SIGHUP {
				reload(ctx, srv, page, c, path, provider, audit, stderr)
				continue
			}
			if err := shutdown(srv, sig); err != nil {
				fmt.Fprintln(stderr, "mailproxy: sessions cut short at shutdown:", err)
			}
			return exitOK
		}
	}
}

func shutdown(srv *proxy.Server, sig <-chan os.Signal) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	go func() {
		select {
		case <-sig:
			cancel()
		case <-ctx.Done():
		}
	}()
	return srv.Shutdown(ctx)
}

// reload re-reads the configuration; an invalid one is refused and the
// running one kept.
func reload(ctx context.Context, srv *proxy.Server, page *status.Server, old *config.Config, path, provider string, audit *policy.Audit, stderr io.Writer) {
	file := old.Path
	if file == "" {
		file = "preset " + provider
	}
	c, err := loadConfig(path, provider)
	if err == nil && (c.AuditPath != old.AuditPath || c.Level != old.Level) {
		// The audit log is opened once, at start: taking the rest of the
		// file and not this would report a reload that did not apply.
		err = fmt.Errorf("[log] changed (audit %q, level %v; running with %q, %v): the audit log is opened at start; restart mailproxy to change it",
			c.AuditPath, c.Level, old.AuditPath, old.Level)
	}
	if err == nil {
		// As at start: a generated local certificate that the new
		// listeners make mailproxy replace is named before it goes.
		warnLocalCertChange(c, stderr)
		// The status page's new address is bound first, and given up if
		// the listeners' reload is refused: all or nothing.
		var next *status.Pending
		if next, err = page.Prepare(statusAddress(c)); err == nil {
			was := srv.LocalTLS
			srv.LocalTLS = localTLS(c)
			if err = srv.Reload(ctx, c.Setup()); err != nil {
				srv.LocalTLS = was
				next.Abort()
			} else {
				next.Commit()
			}
		}
	}
	audit.ConfigReload(file, err)
}
