package pop3server

import (
	"errors"
	"io"
)

// Backend is the mail store behind a Server.
type Backend interface {
	// Login checks user's password and returns the user's maildrop,
	// locked for the session (RFC 1939 §4: exclusive access). The errors
	// that choose a response code are ErrAuth, ErrInUse, ErrSysTemp and
	// ErrSysPerm (or errors wrapping them); any other error is answered as
	// [SYS/TEMP]. Error texts never reach the client.
	Login(user, password string) (Mailbox, error)
}

// BackendFunc turns a function into a Backend.
type BackendFunc func(user, password string) (Mailbox, error)

// Login calls f.
func (f BackendFunc) Login(user, password string) (Mailbox, error) { return f(user, password) }

var _ Backend = BackendFunc(nil)

// Mailbox is one user's maildrop, open and locked for one session.
type Mailbox interface {
	// Messages lists the maildrop as the session enters the TRANSACTION
	// state. Message numbers in the session are positions in this list,
	// from 1, and do not change during the session (RFC 1939 §5).
	Messages() ([]Message, error)
	// Open returns a message's content, each line ending in CRLF, as
	// many octets as its Size.
	Open(uid string) (io.ReadCloser, error)
	// Delete removes messages for good. The server calls it only in the
	// UPDATE state, after the client's QUIT (RFC 1939 §6), never when a
	// session ends any other way.
	Delete(uids []string) error
	// Close releases the maildrop. The server calls it once, however the
	// session ends.
	Close() error
}

// Message is one message of a maildrop.
type Message struct {
	// UID is the unique-id listing of RFC 1939 §7 (UIDL): 1 to 70
	// characters in the range 0x21 to 0x7E, never reused for another
	// message of the maildrop.
	UID string
	// Size is the message's size in octets, with CRLF line endings
	// (RFC 1939 §5, LIST), not counting dot-stuffing.
	Size int64
}

// Errors a Backend returns to choose the response code of a failed login.
var (
	// ErrAuth is a wrong user name or password: -ERR [AUTH] (RFC 3206 §4).
	ErrAuth = errors.New("pop3server: invalid user name or password")
	// ErrInUse is a maildrop already locked by another session:
	// -ERR [IN-USE] (RFC 2449 §8.1.1).
	ErrInUse = errors.New("pop3server: maildrop in use")
	// ErrSysTemp is a temporary failure: -ERR [SYS/TEMP] (RFC 3206 §5).
	ErrSysTemp = errors.New("pop3server: temporary failure")
	// ErrSysPerm is a permanent failure: -ERR [SYS/PERM] (RFC 3206 §5).
	ErrSysPerm = errors.New("pop3server: permanent failure")
)
