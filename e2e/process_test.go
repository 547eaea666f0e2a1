//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server the suite started as its own child. It is stopped by
// its pid (and, for what it left behind, its process group), never by name.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  string        // file holding its stdout and stderr
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

// reaper is the suite's watchdog, once setup has started it.
var reaper *watchdog

// watchdog kills the servers the suite started if the test binary dies
// without its teardown (a panic in a test, a -timeout): a shell that waits
// for EOF on a pipe only the test binary holds, then kills every pid (and
// its process group) listed in a file. Pdeathsig alone is not enough:
// Linux clears it when a process changes credentials, which Postfix's
// master does.
type watchdog struct {
	mu   sync.Mutex
	file string
	pids map[int]bool
	w    *os.File
	cmd  *exec.Cmd
}

const watchdogScript = `trap '' INT TERM HUP
cat >/dev/null
[ -s "$1" ] || exit 0
echo "e2e watchdog: the suite died before its teardown; killing the servers it started (pids: $(tr '\n' ' ' <"$1"))" >&2
while read -r pid; do
	kill -KILL -- "-$pid" 2>/dev/null
	kill -KILL "$pid" 2>/dev/null
done <"$1"
exit 0`

func startWatchdog(file string) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("sh", "-c", watchdogScript, "e2e-watchdog", file)
	cmd.Stdin, cmd.Stderr = r, os.Stderr
	// Its own group: a ^C to the suite's group must not take it down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	return &watchdog{file: file, pids: map[int]bool{}, w: w, cmd: cmd}, nil
}

func (wd *watchdog) set(pid int, alive bool) {
	if wd == nil {
		return
	}
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if alive {
		wd.pids[pid] = true
	} else {
		delete(wd.pids, pid)
	}
	var b strings.Builder
	for p := range wd.pids {
		fmt.Fprintf(&b, "%d\n", p)
	}
	os.WriteFile(wd.file, []byte(b.String()), 0o600)
}

// stop ends the watchdog after a normal teardown.
func (wd *watchdog) stop() error {
	wd.mu.Lock()
	left := len(wd.pids)
	wd.mu.Unlock()
	wd.w.Close()
	err := wd.cmd.Wait()
	if left > 0 {
		return fmt.Errorf("the watchdog had to kill %d servers the teardown left running", left)
	}
	return err
}

// startProc starts a server in the background. Its output goes to outPath.
// The child gets SIGKILL if the test binary dies without cleaning up, from
// Pdeathsig and from the watchdog, so that nothing outlives the suite.
// With ownGroup it leads a process group of its own, so that stop can also
// reach its children; servers that call setsid themselves (Postfix's
// master) must not get it.
func startProc(name, outPath string, ownGroup bool, env []string, argv ...string) (*proc, error) {
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: ownGroup, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: outPath, done: make(chan struct{})}
	reaper.set(p.pid(), true)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output returns the last lines the process wrote, for error messages.
func (p *proc) output() string {
	b, err := os.ReadFile(p.out)
	if err != nil {
		return "(no output: " + err.Error() + ")"
	}
	return lastLines(string(b), 20)
}

// stop sends SIGTERM to the pid, then again after grace (mailproxy ends its
// sessions at once on a second signal), then SIGKILL. Afterwards anything
// left in the process's group is killed too, and reported: a server that
// leaves processes behind is a finding.
func (p *proc) stop(grace time.Duration) error {
	start := time.Now()
	defer func() {
		fmt.Printf("e2e: stopped %s (pid %d) in %v\n", p.name, p.pid(), time.Since(start).Round(time.Millisecond))
	}()
	pid := p.pid()
	pgid, _ := syscall.Getpgid(pid)
	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGKILL} {
		if p.exited() {
			break
		}
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stopping %s (pid %d): %w", p.name, pid, err)
		}
		wait := grace
		if i == 2 {
			wait = 5 * time.Second
		}
		select {
		case <-p.done:
		case <-time.After(wait):
		}
	}
	if !p.exited() {
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pid)
	}
	var err error
	if pgid == pid {
		err = reapGroup(p.name, pgid)
	}
	reaper.set(pid, false)
	return err
}

// reapGroup waits briefly for the members of process group pgid to exit
// after their leader did, then kills what remains and says so.
func reapGroup(name string, pgid int) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pgid, 0) != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	left := groupMembers(pgid)
	syscall.Kill(-pgid, syscall.SIGKILL)
	return fmt.Errorf("%s left processes running 5s after it exited (killed now): %s", name, strings.Join(left, ", "))
}

// groupMembers lists "pid name" of the processes in group pgid.
func groupMembers(pgid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
			out = append(out, e.Name()+" "+strings.TrimSpace(string(comm)))
		}
	}
	return out
}

// waitPort waits until 127.0.0.1:port accepts connections, failing early
// if the server that should open it has exited.
func waitPort(p *proc, port int, timeout time.Duration) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before listening on %s; its output:\n%s", p.name, p.err, addr, p.output())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not listening on %s after %v; its output:\n%s", p.name, addr, timeout, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFile waits until path exists (a unix socket a server creates).
func waitFile(p *proc, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if p.exited() || time.Now().After(deadline) {
			return fmt.Errorf("%s did not create %s; its output:\n%s", p.name, path, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePorts picks n distinct ports on 127.0.0.1 that can be bound now. They
// come from 20000-31999, below Linux's ephemeral range, so that the
// suite's own outgoing connections cannot take one before its server binds
// it.
func freePorts(n int) ([]int, error) {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("no free ports on 127.0.0.1 in 20000-31999")
		}
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		held = append(held, l)
		ports = append(ports, port)
	}
	return ports, nil
}

// lastLines returns at most n last lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("(... %d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
