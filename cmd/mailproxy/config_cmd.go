package main

import (
	"fmt"
	"io"

	"mailproxy/config"
)

func configCheckCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config check", stderr)
	path := fs.String("config", "", "the configuration file to check (required)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mailproxy config check -config FILE")
		return exitUsage
	}
	c, err := config.Load(*path)
	if err != nil {
		reportConfigError(err, stderr)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok: %d provider(s), %d listener(s)\n", *path, len(c.Providers), len(c.Listeners))
	for _, l := range c.Listeners {
		fmt.Fprintf(stdout, "  %s %s -> %s (%s)\n", l.Proto, l.Address, l.ProviderName(), l.Upstream())
	}
	return exitOK
}
