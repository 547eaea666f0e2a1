//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// logFile is a log some server or mailproxy appends to. Steps remember its
// size when they begin, so that a failure shows what was written during
// the step and nothing older.
type logFile struct {
	name string // for messages: "mailproxy audit", "dovecot", ...
	path string
}

func (l *logFile) size() int64 {
	fi, err := os.Stat(l.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// since returns what was written from offset off on.
func (l *logFile) since(off int64) string {
	f, err := os.Open(l.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// waitLine waits until a line written from off on satisfies match, and
// returns it.
func (l *logFile) waitLine(off int64, timeout time.Duration, match func(string) bool) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range strings.Split(l.since(off), "\n") {
			if match(line) {
				return line, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// event is one audit line.
type event map[string]any

func (ev event) str(key string) string {
	switch v := ev[key].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// events parses the audit lines written from off on. A line that is not
// JSON is an error: the audit log is JSON lines and nothing else.
func (l *logFile) events(off int64) ([]event, error) {
	var evs []event
	sc := bufio.NewScanner(strings.NewReader(l.since(off)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("%s: a line is not JSON (%v): %s", l.name, err, sc.Text())
		}
		evs = append(evs, ev)
	}
	return evs, sc.Err()
}

// step is one step of a scenario: which client does what over which
// route. Its failures say all of that and show the audit lines and the
// provider's log lines written during the step.
type step struct {
	t      *testing.T
	e      *env
	client string
	r      route
	what   string
	logs   []*logFile
	marks  []int64
}

// step begins a step. client is the program acting ("curl", "swaks",
// "imaplib", "mbsync", "fetchmail", "go-imap-transcript", "mailproxy
// check"); r is the route it takes.
func (e *env) step(t *testing.T, client string, r route, what string) *step {
	t.Helper()
	s := &step{t: t, e: e, client: client, r: r, what: what}
	if r.mp != nil {
		s.logs = append(s.logs, r.mp.audit, r.mp.stderr)
	}
	s.logs = append(s.logs, e.prov.logs()...)
	for _, l := range s.logs {
		s.marks = append(s.marks, l.size())
	}
	t.Logf("step: %s", s.header())
	return s
}

func (s *step) header() string {
	return fmt.Sprintf("client=%s proto=%s route=%q step=%q", s.client, s.r.proto, s.r.String(), s.what)
}

// context is what the step's failure messages carry after the message:
// the audit lines and the servers' log lines written during the step.
func (s *step) context() string {
	var b strings.Builder
	for i, l := range s.logs {
		text := strings.TrimRight(s.since(i), "\n")
		if text == "" {
			if l == s.r.auditLog() {
				b.WriteString("\n--- " + l.name + ": no lines during this step ---")
			}
			continue
		}
		fmt.Fprintf(&b, "\n--- %s lines during this step (%s) ---\n%s", l.name, l.path, lastLines(s.e.redact(text), 40))
	}
	return b.String()
}

func (s *step) since(i int) string { return s.logs[i].since(s.marks[i]) }

// auditEvents returns the audit events written during the step.
func (s *step) auditEvents() []event {
	s.t.Helper()
	a := s.r.auditLog()
	if a == nil {
		return nil
	}
	for i, l := range s.logs {
		if l == a {
			evs, err := a.events(s.marks[i])
			if err != nil {
				s.Fatalf("%v", err)
			}
			return evs
		}
	}
	return nil
}

// logSince returns what l got during the step.
func (s *step) logSince(l *logFile) string {
	for i, x := range s.logs {
		if x == l {
			return s.since(i)
		}
	}
	return ""
}

// mark returns l's offset at the start of the step.
func (s *step) mark(l *logFile) int64 {
	for i, x := range s.logs {
		if x == l {
			return s.marks[i]
		}
	}
	return l.size()
}

// Fatalf ends the test with the step's context.
func (s *step) Fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("FAIL %s\n%s%s", s.header(), s.e.redact(fmt.Sprintf(format, args...)), s.context())
}

// Errorf marks the test failed with the step's context and goes on.
func (s *step) Errorf(format string, args ...any) {
	s.t.Helper()
	s.t.Errorf("FAIL %s\n%s%s", s.header(), s.e.redact(fmt.Sprintf(format, args...)), s.context())
}

// result is what a client program did.
type result struct {
	argv   []string
	code   int // exit code; -1 when it did not exit normally
	stdout []byte
	stderr []byte
	err    error // could not run, or timed out
}

// describe words the result for a failure message: command line, exit
// code, and the tail of its output, redacted.
func (r *result) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "command: %s\nexit code: %d", strings.Join(r.argv, " "), r.code)
	if r.err != nil {
		fmt.Fprintf(&b, " (%v)", r.err)
	}
	if len(r.stdout) > 0 && len(r.stdout) < 64<<10 {
		fmt.Fprintf(&b, "\n--- stdout ---\n%s", lastLines(string(r.stdout), 30))
	} else if len(r.stdout) > 0 {
		fmt.Fprintf(&b, "\n--- stdout: %d bytes ---", len(r.stdout))
	}
	if len(r.stderr) > 0 {
		fmt.Fprintf(&b, "\n--- stderr ---\n%s", lastLines(string(r.stderr), 30))
	}
	return b.String()
}

// cmdOpts are the optional parts of running a client.
type cmdOpts struct {
	env     []string // added to the suite's environment (passwords go here, never in argv)
	stdin   []byte
	dir     string
	timeout time.Duration // default 2 minutes
}

// run runs a client program and returns what it did; it does not judge.
func (s *step) run(o cmdOpts, argv ...string) *result {
	s.t.Helper()
	if o.timeout == 0 {
		o.timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Dir = o.dir
	if o.stdin != nil {
		cmd.Stdin = bytes.NewReader(o.stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := &result{argv: argv, code: -1, stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.code = 0
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		r.err = err
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("timed out after %v", o.timeout)
	}
	s.e.checkNoSecretsIn(s.t, s.client+" command line", []byte(strings.Join(argv, " ")))
	return r
}

// must runs a client and fails the step unless it exits 0.
func (s *step) must(o cmdOpts, argv ...string) *result {
	s.t.Helper()
	r := s.run(o, argv...)
	if r.code != 0 {
		s.Fatalf("%s failed\n%s", s.client, r.describe())
	}
	return r
}

// expectAudit fails the step unless the audit lines written during it
// hold an event named msg whose fields have the given values.
// Events are written as they happen, but a session's last ones may follow
// the client's exit by a moment, so it waits up to five seconds.
func (s *step) expectAudit(msg string, fields map[string]string) event {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var seen []string
		for _, ev := range s.auditEvents() {
			if ev.str("msg") != msg {
				continue
			}
			ok := true
			for k, v := range fields {
				if ev.str(k) != v {
					ok = false
				}
			}
			if ok {
				return ev
			}
			seen = append(seen, fmt.Sprint(ev))
		}
		if time.Now().After(deadline) {
			s.Fatalf("no %s audit event with %v during this step (other %s events: %v)", msg, fields, msg, seen)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}
