package trust

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func rec(host, pin string) Anchor {
	return Anchor{Host: host, SHA256: "sha256/" + pin, Name: "Root " + pin, Subject: "CN=Root " + pin, FirstSeen: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestLearnReplaceForgetSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mailproxy")
	s := Open(dir)
	if got, learned, err := s.Learn(rec("mail.example.com", "A")); err != nil || !learned || got.SHA256 != "sha256/A" {
		t.Fatalf("first Learn = %v %v %v", got, learned, err)
	}
	// A second Learn keeps the first anchor and returns it.
	if got, learned, err := s.Learn(rec("mail.example.com", "B")); err != nil || learned || got.SHA256 != "sha256/A" {
		t.Fatalf("second Learn = %v %v %v", got, learned, err)
	}
	// A new Store on the same folder (a restart) reads the same record.
	s2 := Open(dir)
	a, ok, err := s2.Lookup("mail.example.com")
	if err != nil || !ok || a != rec("mail.example.com", "A") {
		t.Fatalf("after restart Lookup = %v %v %v", a, ok, err)
	}
	if old, had, err := s2.Replace(rec("mail.example.com", "B")); err != nil || !had || old.SHA256 != "sha256/A" {
		t.Fatalf("Replace = %v %v %v", old, had, err)
	}
	if a, _, _ := s.Lookup("mail.example.com"); a.SHA256 != "sha256/B" {
		t.Fatalf("the first Store does not see the replacement: %v", a)
	}
	if gone, err := s.Forget("mail.example.com"); err != nil || !gone {
		t.Fatalf("Forget = %v %v", gone, err)
	}
	if gone, err := s.Forget("mail.example.com"); err != nil || gone {
		t.Fatalf("second Forget = %v %v", gone, err)
	}
	if l, err := s.List(); err != nil || len(l) != 0 {
		t.Fatalf("List = %v %v", l, err)
	}
}

// The folder is 0700 and the file 0600 whatever the umask; a folder or
// file found wider is narrowed, never kept or widened.
func TestPermissions(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "mailproxy")
	s := Open(dir)
	if _, _, err := s.Learn(rec("a.example", "A")); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("folder mode %v (%v), want 0700", fi.Mode().Perm(), err)
		}
		if fi, err := os.Stat(s.Path()); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("file mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if fi, _ := e.Info(); fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v", e.Name(), fi.Mode().Perm())
			}
		}
	}
	check()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Replace(rec("a.example", "B")); err != nil {
		t.Fatal(err)
	}
	check()
}

// A damaged file is an error, never an empty store.
func TestDamagedFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := Open(dir)
	for _, bad := range []string{"{", `{"anchors":[{"host":"x"}]}`, `{"anchors":[],"extra":1}`} {
		if err := os.WriteFile(s.Path(), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Lookup("x"); err == nil {
			t.Errorf("%q read as a store", bad)
		}
		if _, _, err := s.Learn(rec("x", "A")); err == nil {
			t.Errorf("%q: Learn wrote over a damaged store", bad)
		}
	}
}

// Concurrent learners, in this process and in "another" (a second Store on
// the same folder): every host is recorded once, none is lost.
func TestConcurrentLearn(t *testing.T) {
	dir := t.TempDir()
	stores := []*Store{Open(dir), Open(dir)}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := stores[i%2].Learn(rec(fmt.Sprintf("h%d.example", i%20), fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	l, err := stores[0].List()
	if err != nil || len(l) != 20 {
		t.Fatalf("List = %d records, %v; want 20", len(l), err)
	}
}

// TestLockWaitBounded: a store locked by a process that hangs refuses to
// learn after lockWait instead of blocking the connection for ever.
func TestLockWaitBounded(t *testing.T) {
	defer func(d time.Duration) { lockWait = d }(lockWait)
	lockWait = 200 * time.Millisecond
	s := Open(filepath.Join(t.TempDir(), "mailproxy"))
	if err := s.mkdir(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, FileName+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Another open file description: flock conflicts with it as with
	// another process.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := s.Learn(rec("mail.example.com", "A"))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "locked by another process") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Learn waited for the lock without bound")
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if _, learned, err := s.Learn(rec("mail.example.com", "A")); err != nil || !learned {
		t.Fatalf("after the lock was given up: %v %v", learned, err)
	}
}
