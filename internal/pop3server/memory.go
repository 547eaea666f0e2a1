package pop3server

import (
	"crypto/subtle"
	"fmt"
	"io"
	"strings"
	"sync"
)

// MemBackend is a Backend that keeps users and their messages in memory.
// The zero value is not usable; call NewMemBackend.
type MemBackend struct {
	mu      sync.Mutex
	users   map[string]*MemUser
	nextUID int
}

var _ Backend = (*MemBackend)(nil)

// NewMemBackend returns an empty in-memory backend.
func NewMemBackend() *MemBackend {
	return &MemBackend{users: map[string]*MemUser{}}
}

// MemUser is one user of a MemBackend.
type MemUser struct {
	b        *MemBackend
	name     string
	password string
	msgs     []memMessage // guarded by b.mu
	locked   bool         // guarded by b.mu
}

type memMessage struct {
	uid  string
	body string // CRLF line endings
}

// AddUser adds a user (or replaces one of the same name) with an empty
// maildrop.
func (b *MemBackend) AddUser(name, password string) *MemUser {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := &MemUser{b: b, name: name, password: password}
	b.users[name] = u
	return u
}

// Add appends a message to the maildrop and returns its UID. Bare LF line
// endings become CRLF, and a missing final line ending is added, so that
// Size is what RFC 1939 counts.
func (u *MemUser) Add(message string) string {
	u.b.mu.Lock()
	defer u.b.mu.Unlock()
	u.b.nextUID++
	uid := fmt.Sprintf("uid%06d", u.b.nextUID)
	u.msgs = append(u.msgs, memMessage{uid: uid, body: crlf(message)})
	return uid
}

// Messages returns the UIDs of the messages now in the maildrop, in order.
func (u *MemUser) Messages() []string {
	u.b.mu.Lock()
	defer u.b.mu.Unlock()
	var out []string
	for _, m := range u.msgs {
		out = append(out, m.uid)
	}
	return out
}

// Locked reports whether a session holds the maildrop.
func (u *MemUser) Locked() bool {
	u.b.mu.Lock()
	defer u.b.mu.Unlock()
	return u.locked
}

// crlf normalises line endings to CRLF and ends the text with one.
func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if s != "" && !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

// Login checks the password in constant time and locks the maildrop.
func (b *MemBackend) Login(user, password string) (Mailbox, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.users[user]
	if !ok || subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) != 1 {
		return nil, ErrAuth
	}
	if u.locked {
		return nil, ErrInUse
	}
	u.locked = true
	return &memMailbox{u: u}, nil
}

// memMailbox is a MemUser's maildrop held by one session.
type memMailbox struct {
	u      *MemUser
	closed bool
}

func (m *memMailbox) Messages() ([]Message, error) {
	m.u.b.mu.Lock()
	defer m.u.b.mu.Unlock()
	out := make([]Message, len(m.u.msgs))
	for i, msg := range m.u.msgs {
		out[i] = Message{UID: msg.uid, Size: int64(len(msg.body))}
	}
	return out, nil
}

func (m *memMailbox) Open(uid string) (io.ReadCloser, error) {
	m.u.b.mu.Lock()
	defer m.u.b.mu.Unlock()
	for _, msg := range m.u.msgs {
		if msg.uid == uid {
			return io.NopCloser(strings.NewReader(msg.body)), nil
		}
	}
	return nil, fmt.Errorf("pop3server: no message %s", uid)
}

func (m *memMailbox) Delete(uids []string) error {
	m.u.b.mu.Lock()
	defer m.u.b.mu.Unlock()
	gone := map[string]bool{}
	for _, uid := range uids {
		gone[uid] = true
	}
	keep := m.u.msgs[:0:0]
	for _, msg := range m.u.msgs {
		if !gone[msg.uid] {
			keep = append(keep, msg)
		}
	}
	m.u.msgs = keep
	return nil
}

func (m *memMailbox) Close() error {
	m.u.b.mu.Lock()
	defer m.u.b.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.u.locked = false
	}
	return nil
}
