package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"mailproxy/config"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/proxy/imap"
	"mailproxy/proxy/pop3"
	"mailproxy/proxy/smtp"
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

func runCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	path := fs.String("config", "", "configuration file (default: the first of the default locations that exists)")
	provider := fs.String("provider", "", "built-in provider to serve, or the one provider of the file to serve")
	if err := fs.Parse(args); err != nil {
		return exitUsage
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
	audit, closer, err := openAudit(c, stdout, stderr)
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
	srv := &proxy.Server{Audit: audit, Dialer: &tlsconf.Dialer{Trust: store}, Fronts: fronts(), LocalTLS: localTLS(c)}
	ctx := context.Background()
	if err := srv.Start(ctx, c.Setup()); err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	return serveUntilSignal(ctx, sig, srv, c, *path, *provider, audit, stderr)
}

// serveUntilSignal waits for SIGINT/SIGTERM (graceful stop) and SIGHUP
// (reload the configuration).
func serveUntilSignal(ctx context.Context, sig <-chan os.Signal, srv *proxy.Server, c *config.Config, path, provider string, audit *policy.Audit, stderr io.Writer) int {
	for {
		select {
		case err := <-srv.Err():
			fmt.Fprintln(stderr, "mailproxy:", err)
			shutdown(srv, sig)
			return exitFailure
		case s := <-sig:
			if s == syscall.SIGHUP {
				reload(ctx, srv, c, path, provider, audit)
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
func reload(ctx context.Context, srv *proxy.Server, old *config.Config, path, provider string, audit *policy.Audit) {
	file := old.Path
	if file == "" {
		file = "preset " + provider
	}
	c, err := loadConfig(path, provider)
	if err == nil {
		srv.LocalTLS = localTLS(c)
		err = srv.Reload(ctx, c.Setup())
	}
	audit.ConfigReload(file, err)
}
