package smtp

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/proxy"
)

// maxReply bounds the bytes mailproxy reads for one reply of the provider
// (from one command's Write to the next), and maxReplyLine each line of
// it: go-smtp's client reads replies with net/textproto, which bounds
// neither the number of continuation lines nor the reply's size, so
// without them a provider (TLS-verified, but misbehaving or compromised)
// could stream a reply into memory until the command timeout. 64 KiB is
// far above any real reply (an EHLO reply is a few hundred bytes), and
// matches the HTTP header bound of the OAuth2 client. RFC 5321
// §4.5.3.1.5 puts a reply line at 512 bytes; go-smtp's client itself
// stops at 2000 (with an error nobody audits), so mailproxy's 1000 comes
// first.
const (
	maxReply     = 64 << 10
	maxReplyLine = 1000
)

// replyConn is the provider connection as go-smtp's client sees it: a
// reply that runs past maxReply, or a line past maxReplyLine, fails the
// read with errReplyTooLong, once refused (over is called); every read
// after it fails too.
type replyConn struct {
	net.Conn
	left    atomic.Int64 // what the current reply may still take
	line    int          // bytes of the current line before its LF, CR included
	tripped atomic.Bool
	over    func() // audits the refusal; called once
}

func newReplyConn(c net.Conn, over func()) *replyConn {
	r := &replyConn{Conn: c, over: over}
	r.left.Store(maxReply)
	return r
}

// errReplyTooLong is the error of a read past maxReply or maxReplyLine.
var errReplyTooLong = &proxy.ProviderError{Msg: fmt.Sprintf("the provider's reply is longer than %d bytes (or a line of it than %d); mailproxy reads no more of it", maxReply, maxReplyLine)}

func (r *replyConn) Read(b []byte) (int, error) {
	left := r.left.Load()
	if left <= 0 || r.tripped.Load() {
		return r.trip()
	}
	if int64(len(b)) > left {
		b = b[:left]
	}
	n, err := r.Conn.Read(b)
	r.left.Add(-int64(n))
	for _, c := range b[:n] {
		if c == '\n' {
			r.line = 0
		} else if r.line++; r.line > maxReplyLine {
			return r.trip()
		}
	}
	return n, err
}

func (r *replyConn) trip() (int, error) {
	if !r.tripped.Swap(true) && r.over != nil {
		r.over()
	}
	return 0, errReplyTooLong
}

// Write is the next command (or part of the message): the provider's
// next reply starts after it.
func (r *replyConn) Write(b []byte) (int, error) {
	if !r.tripped.Load() {
		r.left.Store(maxReply)
	}
	return r.Conn.Write(b)
}

// Bounds on the provider's text passed on to the app in a reply: the
// lines of a multi-line reply, and each line's bytes.
const (
	maxReplyLines    = 20
	maxReplyLineText = 512
)

// clipText makes a provider's reply text (lines joined by "\n", as
// go-smtp's client returns it) fit to pass on: printable, at most
// maxReplyLines lines of at most maxReplyLineText bytes each.
func clipText(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > maxReplyLines {
		lines = append(lines[:maxReplyLines-1], "...")
	}
	for i, l := range lines {
		lines[i] = proxy.Printable(l, maxReplyLineText)
	}
	return strings.Join(lines, "\n")
}

// clip returns the provider's reply with its text clipped (clipText).
func clip(se *gosmtp.SMTPError) *gosmtp.SMTPError {
	c := *se
	c.Message = clipText(se.Message)
	return &c
}
