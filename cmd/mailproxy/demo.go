package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"mailproxy/config"
	"mailproxy/internal/demo"
	"mailproxy/policy"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// demoConfig is the configuration mailproxy demo runs: the demo provider
// behind the usual listeners. It goes through the same parser and checks
// as a user's file.
const demoConfig = `[[provider]]
name = "demo"
hosts = ["127.0.0.1"]
domains = ["demo.test"]
imap = %q
%s
smtp = %q
ca_file = %q
allow_private_addresses = true   # the demo provider lives on this machine
`

const demoListener = `
[[listen]]
protocol = %q
address = "127.0.0.1:%d"
provider = "demo"
`

type demoFlags struct {
	fs   *flag.FlagSet
	base *int
}

func newDemoFlags(stderr io.Writer) *demoFlags {
	fs := newFlags("demo", stderr)
	return &demoFlags{fs: fs, base: fs.Int("port-base", 1000, "listen on N+143 (IMAP), N+110 (POP3) and N+587 (SMTP)")}
}

func demoCmd(args []string, stdout, stderr io.Writer) int {
	f := newDemoFlags(stderr)
	fs, base := f.fs, f.base
	if code, ok := parseFlags("demo", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 || *base < 0 || *base+587 > 65535 {
		fmt.Fprintln(stderr, "usage: mailproxy demo [-port-base N]")
		return exitUsage
	}
	if !checkEnvironment(stderr) {
		return exitUsage
	}
	prov, err := demo.Start()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy demo: starting the demo provider:", err)
		return exitFailure
	}
	defer prov.Close()

	pop3 := ""
	if prov.POP3 != "" {
		pop3 = fmt.Sprintf("pop3 = %q", prov.POP3)
	}
	doc := fmt.Sprintf(demoConfig, prov.IMAP, pop3, prov.SMTP, prov.CAFile)
	ports := map[policy.Proto]int{policy.IMAP: *base + 143, policy.POP3: *base + 110, policy.SMTP: *base + 587}
	for _, proto := range policy.Protos {
		if proto != policy.POP3 || pop3 != "" {
			doc += fmt.Sprintf(demoListener, proto, ports[proto])
		}
	}
	c, err := config.Parse("demo", []byte(doc))
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy demo: internal configuration error:", err)
		return exitFailure
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	audit := policy.NewAudit(stderr, c.Level)
	srv := &proxy.Server{Audit: audit, Dialer: &tlsconf.Dialer{}, Fronts: fronts(), LocalTLS: localTLS(c)}
	ctx := context.Background()
	if err := srv.Start(ctx, c.Setup()); err != nil {
		fmt.Fprintln(stderr, "mailproxy demo:", err, "(another program may use the port: try -port-base 20000)")
		return exitFailure
	}
	printDemo(stdout, c, ports, prov)
	select {
	case <-sig:
	case err := <-srv.Err():
		fmt.Fprintln(stderr, "mailproxy demo:", err)
	}
	shutdown(srv, sig)
	return exitOK
}

func printDemo(w io.Writer, c *config.Config, ports map[policy.Proto]int, prov *demo.Provider) {
	serving := map[policy.Proto]bool{}
	for _, l := range c.Listeners {
		serving[l.Proto] = true
	}
	user := demo.User + ":" + demo.Password
	fmt.Fprintf(w, `mailproxy demo is running.

A throwaway provider (IMAP, POP3 and SMTP behind TLS from a CA made for this
run) listens on 127.0.0.1, and mailproxy sits in front of it exactly as it
would in front of your real provider. mailproxy's audit log (JSON lines) goes
to standard error.

Account: user %q, password %q (address %s)
Mail app: server 127.0.0.1, no encryption (this hop stays on your machine),
normal password;`, demo.User, demo.Password, demo.Address)
	for _, proto := range policy.Protos {
		if serving[proto] {
			fmt.Fprintf(w, " %s port %d", proto, ports[proto])
		}
	}
	fmt.Fprint(w, ".\n\nTry it (each line is one command):\n")
	if serving[policy.IMAP] {
		fmt.Fprintf(w, "curl -s --url 'imap://127.0.0.1:%d/' --user '%s'\n", ports[policy.IMAP], user)
		fmt.Fprintf(w, "curl -s --url 'imap://127.0.0.1:%d/INBOX;UID=1' --user '%s'\n", ports[policy.IMAP], user)
	}
	if serving[policy.SMTP] {
		fmt.Fprintf(w, "curl -s --url 'smtp://127.0.0.1:%d' --user '%s' --mail-from '%s' --mail-rcpt '%s' --upload-file '%s'\n",
			ports[policy.SMTP], user, demo.Address, demo.Address, prov.SampleMessage)
	}
	if serving[policy.IMAP] {
		fmt.Fprintf(w, "curl -s --url 'imap://127.0.0.1:%d/INBOX;UID=3' --user '%s'\n", ports[policy.IMAP], user)
	}
	if serving[policy.POP3] {
		fmt.Fprintf(w, "curl -s --url 'pop3://127.0.0.1:%d/' --user '%s'\n", ports[policy.POP3], user)
		fmt.Fprintf(w, "curl -s --url 'pop3://127.0.0.1:%d/1' --user '%s'\n", ports[policy.POP3], user)
	}
	fmt.Fprint(w, "\nStop with Ctrl-C.\n")
}
