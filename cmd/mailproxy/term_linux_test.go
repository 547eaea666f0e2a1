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
