package main

import (
	"flag"
	"fmt"
	"io"

	"mailproxy/config"
)

type configCheckFlags struct {
	fs   *flag.FlagSet
	path *string
}

func newConfigCheckFlags(stderr io.Writer) *configCheckFlags {
	fs := newFlags("config check", stderr)
	return &configCheckFlags{fs: fs, path: fs.String("config", "", "the configuration file to check (required)")}
}

func configCheckCmd(args []string, stdout, stderr io.Writer) int {
	f := newConfigCheckFlags(stderr)
	if code, ok := parseFlags("config check", f.fs, args, stdout, stderr); !ok {
		return code
	}
	path := f.path
	if *path == "" || f.fs.NArg() > 0 {
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
