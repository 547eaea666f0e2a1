package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mailproxy/internal/testkit"
)

// openPTY opens a pseudo-terminal: the master is the user's side (what
// they type, what the terminal shows), the slave mailproxy's terminal.
// With keep it stays open until the test binary exits.
func openPTY(t *testing.T, keep bool) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if !keep {
		t.Cleanup(func() { m.Close() })
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !keep {
		t.Cleanup(func() { s.Close() })
	}
	return m, s
}

func echoing(t *testing.T, f *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

// waitEcho waits until the terminal's echo is as wanted.
func waitEcho(t *testing.T, f *os.File, want bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); echoing(t, f) != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("echo never became %v", want)
		}
	}
}

// TestReadHiddenOnTerminal: the password typed is read without being
// shown, and the terminal echoes again afterwards.
func TestReadHiddenOnTerminal(t *testing.T) {
	master, slave := openPTY(t, false)
	if !isTerminal(slave) {
		t.Fatal("the pseudo-terminal is not a terminal")
	}
	if !echoing(t, slave) {
		t.Fatal("a new terminal does not echo")
	}
	type result struct {
		pw  string
		err error
	}
	got := make(chan result, 1)
	out := &bytes.Buffer{}
	go func() {
		pw, err := readHidden(context.Background(), slave, out, "Local password: ")
		got <- result{pw, err}
	}()
	waitEcho(t, slave, false)
	master.Write([]byte("s3cret-local-pw\n"))
	r := <-got
	if r.err != nil || r.pw != "s3cret-local-pw" {
		t.Fatalf("read %q, %v", r.pw, r.err)
	}
	if !echoing(t, slave) {
		t.Fatal("echo is still off")
	}
	// What the terminal showed: nothing of the password.
	slave.Write([]byte("end\n"))
	shown := make([]byte, 4096)
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := master.Read(shown)
	if strings.Contains(string(shown[:n]), "s3cret") || !strings.Contains(string(shown[:n]), "end") {
		t.Fatalf("the terminal showed %q", shown[:n])
	}
	if out.String() != "Local password: \n" {
		t.Fatalf("prompt %q", out)
	}
}

// TestReadHiddenInterrupted: Ctrl-C (the command's signal context ending)
// gives up the prompt at once and leaves the terminal echoing.
func TestReadHiddenInterrupted(t *testing.T) {
	// Kept open: the abandoned read (the command exits at this point)
	// would otherwise end when the terminal closes and restore its state
	// onto whatever reuses the descriptor number.
	_, slave := openPTY(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		_, err := readHidden(ctx, slave, &bytes.Buffer{}, "Local password: ")
		got <- err
	}()
	waitEcho(t, slave, false)
	cancel()
	select {
	case err := <-got:
		if !errors.Is(err, errInterrupted) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the prompt ignored the interruption")
	}
	if !echoing(t, slave) {
		t.Fatal("echo was left off")
	}
}

// TestLocalPasswordAgainOnTerminal: on a terminal, two passwords that
// differ or one too short are asked for again, up to passwordAttempts
// times, rather than ending the command (and losing the grant just
// issued); the last failure ends it.
func TestLocalPasswordAgainOnTerminal(t *testing.T) {
	type result struct {
		pw  string
		err error
	}
	for _, tc := range []struct {
		name  string
		typed []string // pairs: the password, then again
		want  string   // "" for an error
	}{
		{"third time", []string{"short", "short", "long-enough-1", "long-enough-2", "long-enough-3", "long-enough-3"}, "long-enough-3"},
		{"second time", []string{"long-enough-1", "long-enough-2", "long-enough-3", "long-enough-3"}, "long-enough-3"},
		{"gives up", []string{"short", "short", "a-long-one-1", "a-long-one-2", "short", "short"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t, false)
			stdin = slave
			defer func() { stdin = os.Stdin }()
			out := &testkit.Buffer{}
			got := make(chan result, 1)
			go func() {
				pw, err := readLocalPassword(context.Background(), out)
				got <- result{pw, err}
			}()
			for i, line := range tc.typed {
				// The i-th prompt is up and reading (echo off): a prompt
				// is printed after the previous read put echo back.
				prompts := func() int {
					o := out.String()
					return strings.Count(o, "Local password: ") + strings.Count(o, "Again: ")
				}
				for deadline := time.Now().Add(5 * time.Second); prompts() != i+1 || echoing(t, slave); time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("no prompt %d; printed %q", i+1, out)
					}
				}
				master.Write([]byte(line + "\n"))
			}
			var r result
			select {
			case r = <-got:
			case <-time.After(10 * time.Second):
				t.Fatalf("still asking; printed %q", out)
			}
			if tc.want != "" && (r.err != nil || r.pw != tc.want) {
				t.Fatalf("got %q, %v; printed %q", r.pw, r.err, out)
			}
			if tc.want == "" && (r.err == nil || !strings.Contains(r.err.Error(), "at least 8 characters; nothing was stored")) {
				t.Fatalf("got %q, %v", r.pw, r.err)
			}
			if n, want := strings.Count(out.String(), "Try again."), len(tc.typed)/2-1; n != want {
				t.Fatalf("asked again %d times, want %d; printed %q", n, want, out)
			}
		})
	}
}
