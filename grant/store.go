package grant

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"mailproxy/internal/atomicfile"
)

// Store is the folder of grant records: config.DataDir()/tokens, mode
// 0700, one file of mode 0600 per account and provider. A record is
// replaced atomically (a temporary file in the same folder, synced, then
// renamed over the old one), so a crash leaves the old record or the new
// one, never half of either.
type Store struct {
	Dir string
}

// testHookSave, when set (by tests), runs first in Save; its error is
// Save's: a full disk, a read-only folder.
var testHookSave func() error

// ext ends every record's file name.
const ext = ".grant"

// path names the record of account at provider: a hash, so that an account
// name needs no escaping and the folder's listing says nothing about whose
// grants it holds.
func (s *Store) path(provider, account string) string {
	h := sha256.Sum256([]byte(provider + "\x00" + account))
	return filepath.Join(s.Dir, hex.EncodeToString(h[:16])+ext)
}

// Load reads the record of account at provider; an error wrapping
// fs.ErrNotExist when there is none.
func (s *Store) Load(provider, account string) (*Record, error) {
	b, err := readRecord(s.path(provider, account))
	if err != nil {
		return nil, err
	}
	r, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if r.Provider != provider || r.Account != account {
		return nil, errors.New("grant record: the file holds another account's grant")
	}
	return r, nil
}

// Save writes r, replacing any record of the same account and provider.
func (s *Store) Save(r *Record) error {
	if testHookSave != nil {
		if err := testHookSave(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("creating the token store: %w", err)
	}
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(s.path(r.Provider, r.Account), r.Marshal(), 0o600); err != nil {
		return fmt.Errorf("writing a grant: %w", err)
	}
	return nil
}

// errReplaced is a record that was replaced or removed (`mailproxy
// authorize`, `tokens remove`) while a login refreshed it.
var errReplaced = errors.New("the stored grant was replaced or removed meanwhile; the newer one is kept")

// saveOver writes r only if the file still holds the record whose sealed
// text hashes to was: what `mailproxy authorize` or `tokens remove` did
// while a login was refreshing the old grant stands (errReplaced).
func (s *Store) saveOver(r *Record, was [sha256.Size]byte) error {
	b, err := readRecord(s.path(r.Provider, r.Account))
	if errors.Is(err, fs.ErrNotExist) {
		return errReplaced
	}
	if err != nil {
		return err
	}
	old, err := Parse(b)
	if err != nil || sha256.Sum256(old.Sealed) != was {
		return errReplaced
	}
	return s.Save(r)
}

// List returns every record, ordered by account then provider, and the
// files that are not readable records.
func (s *Store) List() ([]*Record, []error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	var out []*Record
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ext) || !e.Type().IsRegular() {
			continue
		}
		b, err := readRecord(filepath.Join(s.Dir, e.Name()))
		if err == nil {
			var r *Record
			if r, err = Parse(b); err == nil {
				out = append(out, r)
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Account != out[j].Account {
			return out[i].Account < out[j].Account
		}
		return out[i].Provider < out[j].Provider
	})
	return out, errs
}

// Remove deletes the record of account at provider.
func (s *Store) Remove(provider, account string) error {
	return os.Remove(s.path(provider, account))
}

// readRecord reads a record file, no more of it than a record can be
// (Parse refuses what is longer), whatever has been put in the folder.
func readRecord(path string) ([]byte, error) {
	// Only a regular file: a FIFO put in the folder would block the open
	// (and the account's logins behind it), a symbolic link would read
	// whatever it points at.
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: errors.New("not a regular file")}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if now, err := f.Stat(); err != nil || !os.SameFile(fi, now) {
		return nil, &fs.PathError{Op: "read", Path: path, Err: errors.New("the file changed while it was opened")}
	}
	return io.ReadAll(io.LimitReader(f, maxRecord+1))
}
