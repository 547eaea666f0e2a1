//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mailproxy is one `mailproxy run` the suite started, with a listener on
// 127.0.0.1 for every protocol and upstream mode.
type mailproxy struct {
	name   string
	cfg    string
	proc   *proc
	audit  *logFile // the [log] audit file
	stderr *logFile // its stdout and stderr
	ports  map[string]int
	status string // the address of its status page ([status])
	// straceOut is the strace output file when it runs under strace.
	straceOut string
	// upstreamHost is the provider's host name in its configuration
	// ("" is 127.0.0.1), and via its SOCKS5 proxy's address, if any.
	upstreamHost, via string
}

// route is how a client reaches the provider in a step: through one of
// mailproxy's plaintext listeners, or (mp nil) directly over implicit TLS,
// as a control that tells a broken provider or client from a broken relay.
type route struct {
	mp           *mailproxy
	proto        string // imap, pop3, smtp
	mode         string // modeTLS or modeSTARTTLS: how mailproxy reaches the provider
	port         int    // where the client connects on 127.0.0.1
	upstream     string // the provider endpoint behind it
	upstreamPort int
	desc         string // overrides String for steps that are not one connection
}

func (r route) direct() bool { return r.mp == nil }

func (r route) String() string {
	if r.desc != "" {
		return r.desc
	}
	if r.direct() {
		return fmt.Sprintf("direct to %s (no mailproxy, control)", r.upstream)
	}
	return fmt.Sprintf("%s 127.0.0.1:%d -> %s", r.mp.name, r.port, r.upstream)
}

func (r route) auditLog() *logFile {
	if r.direct() {
		return nil
	}
	return r.mp.audit
}

// via returns the route through mp's listener for proto whose provider is
// reached in mode.
func (e *env) via(mp *mailproxy, proto, mode string) route {
	up, upPort := e.prov.upstream(proto, mode)
	return route{mp: mp, proto: proto, mode: mode, port: mp.ports[proto+"/"+mode], upstream: up, upstreamPort: upPort}
}

// direct returns the route straight to the provider's implicit TLS port.
func (e *env) direct(proto string) route {
	up, upPort := e.prov.upstream(proto, modeTLS)
	return route{proto: proto, mode: modeTLS, port: upPort, upstream: up, upstreamPort: upPort}
}

// startMailproxy writes a configuration for the provider and starts
// `mailproxy run` with it; underStrace runs it under strace, recording its
// connect/sendto/sendmsg calls.
func (e *env) startMailproxy(name string, underStrace bool) (mp *mailproxy, err error) {
	return e.startMailproxyWith(name, underStrace, nil)
}

// startMailproxyWith is startMailproxy with the configuration passed
// through edit (when not nil) before it is written.
func (e *env) startMailproxyWith(name string, underStrace bool, edit func(cfg string) string) (mp *mailproxy, err error) {
	dir := filepath.Join(e.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(7)
	if err != nil {
		return nil, err
	}
	mp = &mailproxy{
		name:   name,
		cfg:    filepath.Join(dir, "mailproxy.toml"),
		audit:  &logFile{name + " audit", filepath.Join(dir, "audit.jsonl")},
		stderr: &logFile{name + " stderr", filepath.Join(dir, "mailproxy.out")},
		ports:  map[string]int{},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by the mailproxy e2e suite.\n[log]\naudit = %q\nlevel = \"info\"\n", mp.audit.path)
	// Every client of the suite is 127.0.0.1, and the benchmarks start
	// hundreds of sessions a minute: the per-client rate is raised (its
	// default is tested in proxy/).
	fmt.Fprintf(&b, "\n[limits]\nsessions_per_minute_per_client = 1000000\n")
	mp.status = fmt.Sprintf("127.0.0.1:%d", ports[6])
	fmt.Fprintf(&b, "\n[status]\naddress = %q\n", mp.status)
	for _, mode := range modes {
		fmt.Fprintf(&b, "\n[[provider]]\nname = \"provider-%s\"\nhosts = [\"127.0.0.1\"]\n", mode)
		for _, proto := range []string{"imap", "pop3", "smtp"} {
			up, _ := e.prov.upstream(proto, mode)
			fmt.Fprintf(&b, "%s = %q\n", proto, up)
		}
		fmt.Fprintf(&b, "ca_file = %q\nallow_private_addresses = true\n", e.prov.caFile)
	}
	i := 0
	for _, proto := range []string{"imap", "pop3", "smtp"} {
		for _, mode := range modes {
			mp.ports[proto+"/"+mode] = ports[i]
			fmt.Fprintf(&b, "\n[[listen]]\nprotocol = %q\naddress = \"127.0.0.1:%d\"\nprovider = \"provider-%s\"\n", proto, ports[i], mode)
			i++
		}
	}
	cfg := b.String()
	if edit != nil {
		cfg = edit(cfg)
	}
	if err := os.WriteFile(mp.cfg, []byte(cfg), 0o644); err != nil {
		return nil, err
	}

	argv := []string{e.bin, "run", "-config", mp.cfg}
	if underStrace {
		mp.straceOut = filepath.Join(dir, "strace.out")
		argv = append([]string{"strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", mp.straceOut, "--"}, argv...)
	}
	mp.proc, err = startProc(name, mp.stderr.path, true, nil, argv...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mp.stop()
		}
	}()

	// The IMAP listeners come up in every build; by then mailproxy has
	// printed which protocols it skips.
	for _, mode := range modes {
		if err := mp.waitListener("imap/"+mode, 20*time.Second); err != nil {
			return mp, err
		}
	}
	for key := range mp.ports {
		if err := mp.waitListener(key, 20*time.Second); err != nil {
			return mp, err
		}
	}
	return mp, nil
}

// waitListener waits for the listener.start audit event of a listener
// (not for a connection: an IMAP connection makes mailproxy dial the
// provider, and the strace scenario counts those).
func (mp *mailproxy) waitListener(key string, timeout time.Duration) error {
	addr := "127.0.0.1:" + strconv.Itoa(mp.ports[key])
	_, ok := mp.audit.waitLine(0, timeout, func(line string) bool {
		return strings.Contains(line, `"msg":"listener.start"`) && strings.Contains(line, `"address":"`+addr+`"`)
	})
	if ok {
		return nil
	}
	if mp.proc.exited() {
		return fmt.Errorf("%s exited (%v) before its %s listener %s started; its output:\n%s", mp.name, mp.proc.err, key, addr, mp.proc.output())
	}
	return fmt.Errorf("%s: no listener.start event for %s (%s) after %v; its output:\n%s\naudit:\n%s",
		mp.name, key, addr, timeout, mp.proc.output(), lastLines(mp.audit.since(0), 20))
}

// stop ends mailproxy by its pid. Under strace it signals the traced
// mailproxy (strace itself ignores SIGTERM while tracing) and waits for
// strace to finish writing.
func (mp *mailproxy) stop() error {
	if mp.proc == nil || mp.proc.exited() {
		return nil
	}
	if mp.straceOut == "" {
		return mp.proc.stop(5 * time.Second)
	}
	tracee := tracedChild(mp.proc.pid())
	if tracee == 0 {
		return mp.proc.stop(5 * time.Second)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGKILL} {
		if err := syscall.Kill(tracee, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stopping %s (pid %d under strace): %w", mp.name, tracee, err)
		}
		select {
		case <-mp.proc.done:
			err := reapGroup(mp.name, mp.proc.pid())
			reaper.set(mp.proc.pid(), false)
			return err
		case <-time.After(5 * time.Second):
		}
	}
	return mp.proc.stop(time.Second)
}

// tracedChild returns the pid of strace's child, or 0.
func tracedChild(stracePid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", stracePid, stracePid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}
