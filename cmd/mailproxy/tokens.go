package main

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"mailproxy/policy"
)

type tokensFlags struct {
	fs       *flag.FlagSet
	provider *string
}

// newTokensFlags are the flags of "tokens remove" ("tokens" alone has none).
func newTokensFlags(stderr io.Writer) *tokensFlags {
	fs := newFlags("tokens remove", stderr)
	return &tokensFlags{fs: fs, provider: fs.String("provider", "", "remove only the grant at this provider")}
}

// tokensCmd lists the stored grants (no secrets), or removes one.
func tokensCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "remove" {
		return tokensRemoveCmd(args[1:], stdout, stderr)
	}
	fs := newFlags("tokens", stderr)
	if code, ok := parseFlags("tokens", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mailproxy tokens | mailproxy tokens remove [-provider NAME] ACCOUNT")
		return exitUsage
	}
	store, err := tokenStore()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	recs, errs := store.List()
	for _, err := range errs {
		fmt.Fprintln(stderr, "mailproxy tokens: not a grant record:", err)
	}
	if len(recs) == 0 {
		fmt.Fprintf(stdout, "No stored authorizations in %s.\n", store.Dir)
		return exitOK
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ACCOUNT\tPROVIDER\tCREATED\tLAST REFRESHED")
	for _, r := range recs {
		refreshed := "never"
		if !r.Refreshed.IsZero() {
			refreshed = r.Refreshed.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", policy.Escape(r.Account), policy.Escape(r.Provider), r.Created.Local().Format(time.DateTime), refreshed)
	}
	w.Flush()
	return exitOK
}

func tokensRemoveCmd(args []string, stdout, stderr io.Writer) int {
	f := newTokensFlags(stderr)
	fs, provider := f.fs, f.provider
	if code, ok := parseFlags("tokens", fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: mailproxy tokens remove [-provider NAME] ACCOUNT")
		return exitUsage
	}
	account := fs.Arg(0)
	store, err := tokenStore()
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy:", err)
		return exitFailure
	}
	recs, _ := store.List()
	n := 0
	for _, r := range recs {
		if r.Account != account || (*provider != "" && r.Provider != *provider) {
			continue
		}
		if err := store.Remove(r.Provider, r.Account); err != nil {
			fmt.Fprintln(stderr, "mailproxy tokens remove:", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "Removed the authorization of %s at %s.\n", policy.Escape(r.Account), policy.Escape(r.Provider))
		n++
	}
	if n == 0 {
		fmt.Fprintf(stderr, "mailproxy tokens remove: no stored authorization for %s\n", policy.Escape(account))
		return exitFailure
	}
	return exitOK
}
