package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"mailproxy/status"
)

type reportFlags struct {
	fs    *flag.FlagSet
	since *time.Duration
	html  *string
}

func newReportFlags(stderr io.Writer) *reportFlags {
	fs := newFlags("report", stderr)
	return &reportFlags{fs: fs,
		since: fs.Duration("since", 0, "only events of this last stretch of time, e.g. 24h (default: all)"),
		html:  fs.String("html", "", "also write the report as one self-contained HTML page with charts to this file"),
	}
}

func reportCmd(args []string, stdout, stderr io.Writer) int {
	f := newReportFlags(stderr)
	if code, ok := parseFlags("report", f.fs, args, stdout, stderr); !ok {
		return code
	}
	if f.fs.NArg() != 1 || *f.since < 0 {
		fmt.Fprintln(stderr, "usage: mailproxy report [-since DURATION] [-html FILE] AUDITFILE")
		return exitUsage
	}
	path := f.fs.Arg(0)
	in, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy report:", err)
		return exitFailure
	}
	defer in.Close()
	var since time.Time
	if *f.since > 0 {
		since = time.Now().Add(-*f.since)
	}
	rep, err := status.ReadReport(in, since)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy report:", err)
		return exitFailure
	}
	if err := rep.WriteText(stdout, path); err != nil {
		fmt.Fprintln(stderr, "mailproxy report:", err)
		return exitFailure
	}
	if *f.html != "" {
		out, err := os.Create(*f.html)
		if err == nil {
			err = rep.WriteHTML(out, filepath.Base(path))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "mailproxy report: writing the HTML page:", err)
			return exitFailure
		}
	}
	return exitOK
}
