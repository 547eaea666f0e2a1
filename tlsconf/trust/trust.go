// Package trust remembers, for each provider host, the trust anchor (the
// root certificate authority) that verified its chain the first time
// mailproxy connected: trust on first use, on the anchor rather than the
// leaf, because leaf keys and intermediates rotate every few weeks at many
// providers while the root changes only when the provider changes CA — or
// when someone intercepts with a root the machine trusts (an antivirus
// "mail shield", a corporate middlebox, malware).
//
// The store is one human-readable JSON file, normally
// $XDG_DATA_HOME/mailproxy/trust, in a directory of mode 0700, written with
// mode 0600 by a temporary file renamed over the old one, so that a reader
// (another mailproxy process) sees the old or the new file, never half of
// one. It is read afresh at every lookup, so `mailproxy trust accept` takes
// effect in a running `mailproxy run` at the next connection.
//
// The package decides nothing: it stores and returns records. The dialer
// (package tlsconf) compares and refuses.
package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"mailproxy/internal/atomicfile"
)

// FileName is the store's file name inside its directory.
const FileName = "trust"

// Anchor is what is remembered of one host's trust anchor.
type Anchor struct {
	// Host is the provider host name (lower case), as dialled.
	Host string `json:"host"`
	// SHA256 is the anchor's SPKI hash, spelled as the pins setting takes
	// it: "sha256/<base64>".
	SHA256 string `json:"anchor_sha256"`
	// Name is the anchor's common name (or subject), as shown to people.
	Name string `json:"name"`
	// Subject is the anchor's whole subject.
	Subject string `json:"subject"`
	// FirstSeen is when this anchor was first seen (or accepted) for Host.
	FirstSeen time.Time `json:"first_seen"`
}

// file is the document on disk.
type file struct {
	Comment string   `json:"comment"`
	Anchors []Anchor `json:"anchors"`
}

const comment = "mailproxy trust store: the root CA each provider host was first seen with. " +
	"Edit with `mailproxy trust accept HOST` / `mailproxy trust forget HOST`."

// Store is a trust store in one directory. Its methods are safe for
// concurrent use; a nil *Store stores nothing (trust on first use is off).
type Store struct {
	dir string
	mu  sync.Mutex
}

// Open returns the store in dir (created with mode 0700 at the first
// write). It reads nothing yet.
func Open(dir string) *Store {
	return &Store{dir: dir}
}

// Path is the store's file.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// Lookup returns the anchor remembered for host.
func (s *Store) Lookup(host string) (Anchor, bool, error) {
	// No lock: writes replace the file by rename, so a read sees the
	// old file or the new one, and a handshake never waits for a write.
	f, err := s.read()
	if err != nil {
		return Anchor{}, false, err
	}
	for _, a := range f.Anchors {
		if a.Host == host {
			return a, true, nil
		}
	}
	return Anchor{}, false, nil
}

// Learn remembers a for a.Host unless the host already has an anchor, and
// returns the record in force: a itself (learned true) or the one already
// there, which the caller must compare — another connection may have
// learned it first.
func (s *Store) Learn(a Anchor) (Anchor, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return Anchor{}, false, err
	}
	defer unlock()
	f, err := s.read()
	if err != nil {
		return Anchor{}, false, err
	}
	for _, old := range f.Anchors {
		if old.Host == a.Host {
			return old, false, nil
		}
	}
	f.Anchors = append(f.Anchors, a)
	if err := s.write(f); err != nil {
		return Anchor{}, false, err
	}
	return a, true, nil
}

// Replace remembers a for a.Host, whatever was there; it returns the record
// it replaced, if any.
func (s *Store) Replace(a Anchor) (old Anchor, had bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return Anchor{}, false, err
	}
	defer unlock()
	f, err := s.read()
	if err != nil {
		return Anchor{}, false, err
	}
	out := f.Anchors[:0]
	for _, x := range f.Anchors {
		if x.Host == a.Host {
			old, had = x, true
			continue
		}
		out = append(out, x)
	}
	f.Anchors = append(out, a)
	return old, had, s.write(f)
}

// Forget removes host's record and reports whether there was one.
func (s *Store) Forget(host string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	f, err := s.read()
	if err != nil {
		return false, err
	}
	out := f.Anchors[:0]
	for _, x := range f.Anchors {
		if x.Host != host {
			out = append(out, x)
		}
	}
	if len(out) == len(f.Anchors) {
		return false, nil
	}
	f.Anchors = out
	return true, s.write(f)
}

// List returns every record, by host name.
func (s *Store) List() ([]Anchor, error) {
	f, err := s.read()
	if err != nil {
		return nil, err
	}
	return f.Anchors, nil
}

// lockWait bounds the wait for another process's lock on the store.
var lockWait = 10 * time.Second

// lock takes the store's lock file (flock), so that two processes (a
// running `mailproxy run` learning a host, `mailproxy trust accept` in a
// terminal) never write over each other's change: each write reads the
// file again under the lock. It creates the directory.
func (s *Store) lock() (func(), error) {
	if err := s.mkdir(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, FileName+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the trust store: %w", err)
	}
	// Waited for no longer than lockWait: a process that holds the lock
	// and hangs (a stuck `mailproxy trust`, a home folder on a stalled
	// network share) must not hold every first connection to a host.
	for deadline := time.Now().Add(lockWait); ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("locking the trust store: %w", err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("the trust store %s is locked by another process for more than %s", s.Path(), lockWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// mkdir creates the directory with mode 0700, and narrows it to 0700 if
// it is wider: it also holds the OAuth2 grants.
func (s *Store) mkdir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating the trust store's folder: %w", err)
	}
	fi, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("creating the trust store's folder: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(s.dir, fi.Mode().Perm()&0o700); err != nil {
			return fmt.Errorf("narrowing the trust store's folder to 0700: %w", err)
		}
	}
	return nil
}

// read loads the file; a missing file is an empty store. A file that does
// not parse is an error, never an empty store: forgetting every anchor
// because the file was damaged would silently re-learn an interceptor's.
func (s *Store) read() (*file, error) {
	b, err := os.ReadFile(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return &file{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the trust store: %w", err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("the trust store %s is damaged (%v); fix or remove it", s.Path(), err)
	}
	for _, a := range f.Anchors {
		if a.Host == "" || !strings.HasPrefix(a.SHA256, "sha256/") {
			return nil, fmt.Errorf("the trust store %s is damaged (a record without host or anchor_sha256); fix or remove it", s.Path())
		}
	}
	return &f, nil
}

// write replaces the file atomically: a temporary file in the same
// directory (mode 0600 whatever the umask), synced, then renamed over the
// old one. The caller holds the lock (which made the directory).
func (s *Store) write(f *file) error {
	sort.Slice(f.Anchors, func(i, j int) bool { return f.Anchors[i].Host < f.Anchors[j].Host })
	f.Comment = comment
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := atomicfile.Write(s.Path(), b, 0o600); err != nil {
		return fmt.Errorf("writing the trust store: %w", err)
	}
	return nil
}
