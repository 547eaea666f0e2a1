// Package grant keeps OAuth2 grants for mailproxy: one encrypted record per
// account, the token endpoint requests that turn a record into an access
// token at login, and the two authorization flows that create a record
// (authorization code with PKCE and a loopback redirect, RFC 8252; device
// authorization, RFC 8628).
//
// A record holds the refresh token sealed with XChaCha20-Poly1305 under a
// key that Argon2id derives from the account's local password, the one the
// user's mail apps log in to mailproxy with. The local password is never
// stored, an access token lives in memory only, and this package writes no
// token, code, verifier or password anywhere but to the token endpoint and
// into a sealed record. Every connection to an OAuth2 endpoint is made by
// tlsconf's policed dialer.
package grant

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"mailproxy/proxy"
)

// A record file, one field a line, in this order (docs/design.md, "The
// token store"):
//
//	mailproxy-grant 1
//	provider NAME
//	account ACCOUNT
//	created 2026-11-30T11:00:00Z
//	refreshed 2026-11-30T12:00:00Z      ("-" before the first refresh)
//	kdf argon2id t=3 m=65536 p=4 salt=BASE64
//	aead xchacha20-poly1305 nonce=BASE64
//	sealed BASE64
//
// Everything before the "sealed" line is the associated data of the seal:
// changing a byte of it, of the nonce or of the sealed text makes opening
// fail, as a wrong password does. The plaintext is the refresh token.
const magic = "mailproxy-grant 1"

// KDF are Argon2id's parameters (RFC 9106): passes, memory in KiB,
// lanes.
type KDF struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is RFC 9106 §4's second recommended option: t=3 passes over
// 64 MiB with 4 lanes (BenchmarkDeriveKey: about 0.7 s and 64 MiB on the
// project's shared 2-core test machine); a login pays it only when its
// access token must be refreshed. Records keep their own parameters, so
// they can change later.
var DefaultKDF = KDF{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Bounds on the parameters a record may name, so that a damaged file
// cannot make mailproxy spend minutes or gigabytes.
const (
	maxKDFTime   = 16
	maxKDFMemory = 256 << 10 // 256 MiB: two derivations at once (kdfSlots) hold 512 MiB at most
	maxKDFLanes  = 16
	saltSize     = 16
	maxField     = 320
	maxSealed    = 16 << 10
	// maxRefreshToken is the longest refresh token a record holds: all
	// a sealed text can, less the AEAD's tag.
	maxRefreshToken = maxSealed - chacha20poly1305.Overhead
	// maxRecord is the longest record file Parse accepts.
	maxRecord = 4*maxField + maxSealed*2
)

// Record is one account's stored grant.
type Record struct {
	Provider  string
	Account   string
	Created   time.Time
	Refreshed time.Time // zero before the first refresh
	KDF       KDF
	Salt      []byte
	Nonce     []byte
	Sealed    []byte
}

// ErrWrongPassword is a record that does not open with the password
// given: a wrong password, or a record changed since it was sealed.
var ErrWrongPassword = errors.New("the password does not open this grant")

// Key is a record's key, derived from a local password.
type Key struct{ k []byte }

// DeriveKey derives the key of a password for the record's salt and
// parameters.
func (r *Record) DeriveKey(password string) Key {
	return Key{argon2.IDKey([]byte(password), r.Salt, r.KDF.Time, r.KDF.MemoryKiB, r.KDF.Threads, chacha20poly1305.KeySize)}
}

// Seal makes a new record for account at provider holding refreshToken,
// under a key derived from password with a fresh random salt.
func Seal(provider, account, refreshToken, password string, kdf KDF, now time.Time) (*Record, Key, error) {
	if err := checkName(provider); err != nil {
		return nil, Key{}, fmt.Errorf("provider: %w", err)
	}
	if err := checkName(account); err != nil {
		return nil, Key{}, fmt.Errorf("account: %w", err)
	}
	r := &Record{Provider: provider, Account: account, Created: now.UTC().Truncate(time.Second), KDF: kdf, Salt: make([]byte, saltSize)}
	if _, err := rand.Read(r.Salt); err != nil {
		return nil, Key{}, err
	}
	k := r.DeriveKey(password)
	if err := r.Reseal(k, refreshToken, time.Time{}); err != nil {
		return nil, Key{}, err
	}
	return r, k, nil
}

// Reseal replaces the sealed refresh token (after a rotation, or to record
// a refresh) with a fresh nonce, under the same key.
func (r *Record) Reseal(k Key, refreshToken string, refreshed time.Time) error {
	if len(refreshToken) == 0 || len(refreshToken) > maxRefreshToken {
		return fmt.Errorf("a refresh token must have 1 to %d bytes", maxRefreshToken)
	}
	aead, err := chacha20poly1305.NewX(k.k)
	if err != nil {
		return err
	}
	if !refreshed.IsZero() {
		r.Refreshed = refreshed.UTC().Truncate(time.Second)
	}
	r.Nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(r.Nonce); err != nil {
		return err
	}
	r.Sealed = aead.Seal(nil, r.Nonce, []byte(refreshToken), r.header())
	return nil
}

// Open returns the refresh token, or ErrWrongPassword.
func (r *Record) Open(k Key) (string, error) {
	aead, err := chacha20poly1305.NewX(k.k)
	if err != nil {
		return "", err
	}
	if len(r.Nonce) != aead.NonceSize() {
		return "", ErrWrongPassword
	}
	pt, err := aead.Open(nil, r.Nonce, r.Sealed, r.header())
	if err != nil {
		return "", ErrWrongPassword
	}
	return string(pt), nil
}

var b64 = base64.StdEncoding

// header is the record's text before the sealed line: the associated data.
func (r *Record) header() []byte {
	var b bytes.Buffer
	refreshed := "-"
	if !r.Refreshed.IsZero() {
		refreshed = r.Refreshed.Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "%s\nprovider %s\naccount %s\ncreated %s\nrefreshed %s\n", magic, r.Provider, r.Account, r.Created.Format(time.RFC3339), refreshed)
	fmt.Fprintf(&b, "kdf argon2id t=%d m=%d p=%d salt=%s\n", r.KDF.Time, r.KDF.MemoryKiB, r.KDF.Threads, b64.EncodeToString(r.Salt))
	fmt.Fprintf(&b, "aead xchacha20-poly1305 nonce=%s\n", b64.EncodeToString(r.Nonce))
	return b.Bytes()
}

// Marshal returns the record's file contents.
func (r *Record) Marshal() []byte {
	return append(r.header(), "sealed "+b64.EncodeToString(r.Sealed)+"\n"...)
}

// checkName refuses a provider or account name that could not stand
// alone on its line.
func checkName(s string) error {
	if s == "" || len(s) > maxField {
		return fmt.Errorf("must have 1 to %d bytes", maxField)
	}
	if strings.TrimSpace(s) != s {
		return errors.New("must not begin or end with a space")
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || c == '\u2028' || c == '\u2029' {
			return errors.New("must not hold control characters")
		}
	}
	return nil
}

// Parse reads a record file. It checks the form only; whether the record
// is intact is known when it is opened.
func Parse(data []byte) (*Record, error) {
	if len(data) > maxRecord {
		return nil, errors.New("grant record: too long")
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) != 9 || lines[8] != "" {
		return nil, errors.New("grant record: want 8 lines")
	}
	if lines[0] != magic {
		return nil, errors.New("grant record: not a mailproxy grant (version 1)")
	}
	field := func(i int, name string) (string, error) {
		v, ok := strings.CutPrefix(lines[i], name+" ")
		if !ok {
			return "", fmt.Errorf("grant record: line %d: want %q", i+1, name)
		}
		return v, nil
	}
	r := &Record{}
	var err error
	if r.Provider, err = field(1, "provider"); err != nil {
		return nil, err
	}
	if r.Account, err = field(2, "account"); err != nil {
		return nil, err
	}
	for _, n := range []string{r.Provider, r.Account} {
		if err := checkName(n); err != nil {
			return nil, fmt.Errorf("grant record: name %w", err)
		}
	}
	v, err := field(3, "created")
	if err != nil {
		return nil, err
	}
	if r.Created, err = parseTime(v); err != nil {
		return nil, err
	}
	if v, err = field(4, "refreshed"); err != nil {
		return nil, err
	}
	if v != "-" {
		if r.Refreshed, err = parseTime(v); err != nil {
			return nil, err
		}
	}
	if v, err = field(5, "kdf argon2id"); err != nil {
		return nil, err
	}
	if err := r.parseKDF(v); err != nil {
		return nil, err
	}
	if v, err = field(6, "aead xchacha20-poly1305"); err != nil {
		return nil, err
	}
	n, ok := strings.CutPrefix(v, "nonce=")
	if !ok {
		return nil, errors.New("grant record: want nonce=")
	}
	if r.Nonce, err = decode(n, chacha20poly1305.NonceSizeX); err != nil {
		return nil, err
	}
	if v, err = field(7, "sealed"); err != nil {
		return nil, err
	}
	if r.Sealed, err = decode(v, -1); err != nil {
		return nil, err
	}
	if len(r.Sealed) <= chacha20poly1305.Overhead || len(r.Sealed) > maxSealed {
		return nil, errors.New("grant record: bad sealed length")
	}
	// The header must read back exactly as written: one form only.
	if !bytes.Equal(r.Marshal(), data) {
		return nil, errors.New("grant record: not in canonical form")
	}
	return r, nil
}

func parseTime(v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil || t.Location() != time.UTC || t.Nanosecond() != 0 {
		return time.Time{}, fmt.Errorf("grant record: bad time %q", proxy.Printable(v, 40))
	}
	return t, nil
}

func (r *Record) parseKDF(v string) error {
	f := strings.Split(v, " ")
	if len(f) != 4 {
		return errors.New("grant record: want kdf argon2id t= m= p= salt=")
	}
	num := func(s, name string, lo, hi uint64) (uint64, error) {
		d, ok := strings.CutPrefix(s, name+"=")
		if !ok {
			return 0, fmt.Errorf("grant record: want %s=", name)
		}
		n, err := strconv.ParseUint(d, 10, 32)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("grant record: %s outside %d..%d", name, lo, hi)
		}
		return n, nil
	}
	t, err := num(f[0], "t", 1, maxKDFTime)
	if err != nil {
		return err
	}
	p, err := num(f[2], "p", 1, maxKDFLanes)
	if err != nil {
		return err
	}
	m, err := num(f[1], "m", 8*p, maxKDFMemory)
	if err != nil {
		return err
	}
	r.KDF = KDF{Time: uint32(t), MemoryKiB: uint32(m), Threads: uint8(p)}
	s, ok := strings.CutPrefix(f[3], "salt=")
	if !ok {
		return errors.New("grant record: want salt=")
	}
	r.Salt, err = decode(s, saltSize)
	return err
}

// decode reads standard base64 of size bytes (any size when size < 0).
func decode(s string, size int) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil || (size >= 0 && len(b) != size) {
		return nil, errors.New("grant record: bad base64 field")
	}
	return b, nil
}
