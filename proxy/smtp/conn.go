package smtp

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// appConn is the app's connection as go-smtp's server sees it.
//
// It sets a read deadline before every read (go-smtp's own ReadTimeout is
// set once per command line, so it would bound a whole DATA transfer rather
// than each silence in it), remembers when a read timed out, and tells the
// one-connection listener when go-smtp has closed it. Before login it
// counts every byte the app sends against max_prelogin, as the line-based
// fronts do (proxy.Prelogin), and ends the session with 421 past it; and
// it audits go-smtp's own refusal of an over-long line. It does not close the
// app's connection itself: proxy.Listener does that after Serve, with its
// half-close and drain, so that a last reply (221) is not lost to a reset.
type appConn struct {
	net.Conn
	s        *proxy.Session
	deadline func() (time.Time, bool)
	done     chan struct{} // closed by Close
	// left is what the app may still send before login; loggedIn stops
	// the count.
	left     atomic.Int64
	loggedIn atomic.Bool
	// longLine is set when an over-long line was audited already (one of
	// the message's, by Data), so go-smtp's 500 that follows is not a
	// second refusal.
	longLine atomic.Bool
	// badAuth counts the app's malformed AUTH responses (malformedAuth).
	badAuth atomic.Int32
	// sizeLimit is the SIZE offered to the app, for the audit of
	// go-smtp's own size refusals.
	sizeLimit int64

	mu      sync.Mutex
	closed  bool
	ended   bool // reads return io.EOF: the front ends the session
	timeout bool // a read hit its deadline
	preauth bool // ... and that deadline was the pre-login one
	setPA   bool // the deadline now set is the pre-login one
	// tooLarge is the audited refusal of go-smtp's last "552 5.3.4 Max
	// message size exceeded", for Data to record as the session's error
	// when it cut a BDAT transfer already started at the provider.
	tooLarge error
}

func newAppConn(s *proxy.Session, deadline func() (time.Time, bool)) *appConn {
	c := &appConn{Conn: s.Client, s: s, deadline: deadline, done: make(chan struct{})}
	c.left.Store(int64(s.Settings.Limits.MaxPrelogin))
	return c
}

func (c *appConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return 0, net.ErrClosed
	case c.ended:
		c.mu.Unlock()
		return 0, io.EOF
	}
	// Under the lock, so that a concurrent Close's deadline in the past
	// cannot be overwritten by this one.
	d, preauth := c.deadline()
	c.Conn.SetReadDeadline(d)
	c.setPA = preauth
	c.mu.Unlock()

	n, err := c.Conn.Read(b)
	if n > 0 && !c.loggedIn.Load() && c.left.Add(-int64(n)) < 0 {
		c.overBudget()
		return 0, io.EOF
	}
	if err != nil && proxy.IsTimeout(err) {
		c.mu.Lock()
		if c.closed {
			err = net.ErrClosed
		} else {
			// go-smtp answers this one timeout with 421 4.4.2; after
			// that the app has nothing more to say.
			c.timeout, c.preauth, c.ended = true, c.setPA, true
		}
		c.mu.Unlock()
	}
	return n, err
}

// overBudget ends a session whose app sent more than max_prelogin before
// logging in: go-smtp is waiting for input, so the 421 is written here
// (RFC 5321 §3.8), and the read that crossed the line reports the end.
func (c *appConn) overBudget() {
	c.mu.Lock()
	already := c.ended
	c.ended = true
	c.mu.Unlock()
	if already {
		return
	}
	max := c.s.Settings.Limits.MaxPrelogin
	c.Conn.SetWriteDeadline(time.Now().Add(proxy.WriteTimeout))
	io.WriteString(c.Conn, "421 4.7.0 Too much input before login, closing the connection\r\n")
	c.s.Deny(policy.ReasonLimit, "", "the app sent more than max_prelogin (%d bytes) before login", max)
}

// tooLong is go-smtp's reply to a line over MaxLineLength, after which it
// closes the connection. go-smtp flushes each reply on its own, so it
// arrives here as one Write.
const tooLong = "500 5.4.0 Too long line, closing connection\r\n"

// tlsRequired is go-smtp's refusal of AUTH before STARTTLS on a listener
// that may not take a password in plaintext (AllowInsecureAuth false).
const tlsRequired = "523 5.7.10 "

// tooManyErrors starts go-smtp's reply when it closes the connection after
// repeated protocol errors.
const tooManyErrors = "500 5.5.1 Too many errors"

// maxSizeExceeded is go-smtp's own refusal of a message over its
// MaxMessageBytes (the SIZE offered), given before the backend is asked:
// to MAIL with a SIZE= parameter over it (RFC 1870 §6.1), and to a BDAT
// chunk that takes the message's total over it (after which go-smtp
// resets the transaction, aborting a Data in progress). Its DATA path
// instead returns gosmtp.ErrDataTooLarge ("Maximum message size
// exceeded") to Data, which audits it.
const maxSizeExceeded = "552 5.3.4 Max message size exceeded"

// badBase64 is go-smtp's refusal of an AUTH response that is not base64.
const badBase64 = "454 4.7.0 Invalid base64 data"

func (c *appConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	switch {
	case string(b) == tooLong && !c.longLine.Swap(true):
		c.s.Deny(policy.ReasonLimit, "", "the app sent a command line over %d bytes", max(minLineLength, c.s.Settings.Limits.MaxLine))
	case strings.HasPrefix(string(b), tlsRequired):
		c.s.DenyPlaintextAuth()
	case strings.HasPrefix(string(b), tooManyErrors):
		c.s.Deny(policy.ReasonLimit, "", "the app sent too many commands in error (go-smtp closes the connection after 3)")
	case strings.HasPrefix(string(b), maxSizeExceeded):
		d := c.s.Deny(policy.ReasonLimit, "", "the app's message is larger than %d bytes (the SIZE offered: max_message_size), by its MAIL SIZE= or its BDAT chunks", c.sizeLimit)
		c.mu.Lock()
		c.tooLarge = d
		c.mu.Unlock()
	case strings.HasPrefix(string(b), badBase64):
		c.malformedAuth("the app's AUTH response is not base64")
	}
	return c.Conn.Write(b)
}

// Close is go-smtp ending the conversation. Reads fail from now on (a
// blocked one too), which ends go-smtp's loop.
func (c *appConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.Conn.SetReadDeadline(time.Unix(1, 0))
		close(c.done)
	}
	return nil
}

// end makes reads report the end of input once go-smtp has used up what
// it has buffered: the session is over after the reply being written (a
// 421 for a provider connection that is gone).
func (c *appConn) end() {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
}

// maxMalformedAuth is how many malformed AUTH responses (no user name, not
// base64, not what the mechanism takes) a session may send: each is
// refused before the provider is asked, so it is no login attempt, and
// without a bound each would be one more policy.denied in the log.
const maxMalformedAuth = 5

// malformedAuth audits a malformed AUTH response (reason input); the
// maxMalformedAuth-th ends the session (reason limit) once its reply is
// written, as go-smtp's next read reports the end of input.
func (c *appConn) malformedAuth(detail string) {
	n := c.badAuth.Add(1)
	if n > maxMalformedAuth {
		return
	}
	c.s.Deny(policy.ReasonInput, "", "%s", detail)
	if n == maxMalformedAuth {
		c.s.Deny(policy.ReasonLimit, "", "the app sent %d malformed AUTH responses; the session ends", n)
		c.end()
	}
}

// takeTooLarge returns, and forgets, the audited refusal of go-smtp's last
// size refusal.
func (c *appConn) takeTooLarge() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.tooLarge
	c.tooLarge = nil
	return d
}

// abort closes the app's connection for real (the session's context ended).
func (c *appConn) abort() {
	c.Close()
	c.Conn.Close()
}

// timedOut reports whether a read timed out, and whether at the pre-login
// deadline.
func (c *appConn) timedOut() (preauth, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.preauth, c.timeout
}

// NetConn returns the connection below, for proxy's half-close helpers.
func (c *appConn) NetConn() net.Conn { return c.Conn }

// oneConnListener hands go-smtp's Server.Serve a single connection, then
// blocks until that connection is closed and reports itself closed, which
// makes Serve return.
type oneConnListener struct {
	conn     *appConn
	accepted bool // only Serve's goroutine calls Accept
	closed   chan struct{}
	once     sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.accepted {
		l.accepted = true
		return l.conn, nil
	}
	select {
	case <-l.conn.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
