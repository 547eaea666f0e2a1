package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// isTerminal reports whether f is a terminal (where a password is read
// without echo).
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// errInterrupted is a prompt given up by Ctrl-C or SIGTERM.
var errInterrupted = errors.New("interrupted; nothing was stored")

// readHidden prompts and reads one line from the terminal f with echo
// off. When ctx ends first (Ctrl-C, caught by the command's signal
// context) it gives up at once and puts the terminal back as it was, so
// that the shell the user returns to still echoes.
func readHidden(ctx context.Context, f *os.File, out io.Writer, prompt string) (string, error) {
	fd := int(f.Fd())
	old, err := term.GetState(fd)
	if err != nil {
		return "", err
	}
	fmt.Fprint(out, prompt)
	type result struct {
		line []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := term.ReadPassword(fd)
		got <- result{line, err}
	}()
	select {
	case r := <-got:
		fmt.Fprintln(out) // the Enter was not echoed either
		return string(r.line), r.err
	case <-ctx.Done():
		term.Restore(fd, old)
		fmt.Fprintln(out)
		return "", errInterrupted
	}
}
