package smtp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// copyBuf is the one buffer a message passes through on its way to the
// provider: the message is streamed, never held, but for its top-level
// header block (at most max_header_block), held to remove the provider's
// scrub_headers.
const copyBuf = 32 << 10

// Data relays the app's message (DATA, RFC 5321 §4.1.1.4, or BDAT chunks,
// RFC 3030 §2, which go-smtp's server joins into one stream) to the
// provider as DATA, streaming it: go-smtp has already removed the app's
// dot-stuffing and the provider's DATA writer adds it again. On the way,
// the provider's scrub_headers are removed from the message's top-level
// header block (scrub.go); a header block over max_header_block is refused
// with 552 before anything is sent.
//
// The app's reply comes from the provider's reply to the end of the
// message and nothing else. When the provider accepts it, Data returns that
// 250 as a *gosmtp.SMTPError: go-smtp's server writes a returned
// *SMTPError's code, enhanced code and text as the reply, which is how the
// provider's own text (its queue id) reaches the app. When anything fails
// before that reply, the app gets a 4xx or 5xx, never 250. If the app's side
// fails part-way, the provider connection is closed before the final dot:
// SMTP has no other way to abort a message, and a server treats a
// connection closed mid-transaction as an RSET (RFC 5321 §3.8), so the
// partial message is dropped. The session then has no provider connection
// left, and ends at the app's next MAIL.
func (f *session) Data(r io.Reader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authed.Load() || f.up == nil {
		return f.authRequired()
	}
	if f.up.lost != "" {
		return errLost
	}
	up := f.up
	f.app.takeTooLarge() // a refused MAIL SIZE= is no part of this message

	// DATA starts at the provider with the first bytes the scrubber passes
	// on, once the app's header block is complete (scrub.go): a BDAT
	// transfer the app aborts early, or a header block over the limit,
	// then costs nothing there.
	ld := &lazyData{start: up.c.Data, conn: up.conn, timeout: f.timeout}
	sc := newScrubber(ld, up.route.Provider.ScrubHeaders, f.headerLimit())
	buf := make([]byte, copyBuf)
	var rerr error
	for rerr == nil {
		var n int
		n, rerr = r.Read(buf)
		if n == 0 {
			continue
		}
		if _, err := sc.Write(buf[:n]); err != nil {
			return f.dataFailed(ld, err)
		}
	}
	if rerr != io.EOF {
		if ld.w != nil {
			up.kill("the app's message was cut short")
		}
		return f.appFailed(rerr, ld.w != nil)
	}
	if err := sc.Close(); err != nil {
		return f.dataFailed(ld, err)
	}
	if _, err := ld.Write(nil); err != nil { // an empty message starts DATA here
		return f.dataFailed(ld, err)
	}
	resp, err := ld.w.CloseWithResponse()
	up.txn = false // the reply to the end of the message ends the transaction
	if err != nil {
		return f.providerFailed(err, "waiting for the provider's reply to the message")
	}
	f.s.CountMail(1, f.rcpts, sc.Removed())
	ec, text := parseReply(resp.StatusText)
	return &gosmtp.SMTPError{Code: 250, EnhancedCode: ec, Message: clipText(text)}
}

// lazyData starts DATA at the provider at its first Write, and bounds
// each write of the message to the provider: go-smtp's client sets
// deadlines around commands, not while a message streams.
type lazyData struct {
	start   func() (*gosmtp.DataCommand, error)
	conn    net.Conn
	timeout time.Duration
	w       *gosmtp.DataCommand // once started
	err     error               // from starting DATA
}

func (l *lazyData) Write(p []byte) (int, error) {
	if l.w == nil {
		if l.err != nil {
			return 0, l.err
		}
		w, err := l.start()
		if err != nil {
			l.err = err
			return 0, err
		}
		l.w = w
	}
	if len(p) == 0 {
		return 0, nil
	}
	l.conn.SetWriteDeadline(time.Now().Add(l.timeout))
	return l.w.Write(p)
}

// dataFailed answers a write of the message that failed: a header block
// over the limit (refused, nothing of it sent), or the provider.
func (f *session) dataFailed(ld *lazyData, err error) error {
	if errors.Is(err, errHeaderTooLarge) {
		// Nothing of the message was sent: the scrubber writes nothing
		// before the header block ends, so DATA has not started, and the
		// transaction stays open for the app's RSET.
		limit := f.headerLimit()
		f.s.Deny(policy.ReasonLimit, "", "the app's message has a header block larger than %d bytes (max_header_block); it was not sent", limit)
		return &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("the message's header block is larger than %d bytes; mailproxy removes app-identifying headers from it and passes none on unchecked", limit)}
	}
	if ld.err != nil {
		return f.providerFailed(err, "starting DATA")
	}
	return f.providerFailed(err, "sending the message")
}

// headerLimit is the most the top-level header block may hold.
func (f *session) headerLimit() int {
	if l := f.s.Settings.Limits.MaxHeaderBlock; l > 0 {
		return l
	}
	return proxy.DefaultLimits.MaxHeaderBlock
}

// appFailed answers a message the app did not deliver whole; cut says the
// provider connection had to be closed for it.
func (f *session) appFailed(err error, cut bool) error {
	limits := f.s.Settings.Limits
	// A limit is audited, and is the session's error when it ends the
	// session: when the provider connection went with the partial
	// message, and always for a long line, after which go-smtp closes the
	// app's connection.
	switch {
	case errors.Is(err, gosmtp.ErrDataTooLarge):
		d := f.s.Deny(policy.ReasonLimit, "", "the app's message is larger than %d bytes (the SIZE offered: max_message_size, or 64 MiB)", f.maxSize)
		if cut {
			f.fail(d)
		}
		return gosmtp.ErrDataTooLarge // 552 5.3.4 (RFC 1870 §6.2)
	case errors.Is(err, gosmtp.ErrTooLongLine):
		maxLine := max(minLineLength, limits.MaxLine)
		f.app.longLine.Store(true)
		f.fail(f.s.Deny(policy.ReasonLimit, "", "a line of the app's message is longer than %d bytes (max_line)", maxLine))
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0},
			Message: fmt.Sprintf("a line of the message is longer than %d bytes (RFC 5321 section 4.5.3.1.6 allows 1000)", maxLine)}
	case errors.Is(err, gosmtp.ErrDataReset):
		// The app aborted its BDAT transfer (RSET), or go-smtp cut it for
		// a chunk over the SIZE offered (audited by appConn.Write);
		// go-smtp answers. When the message had started at the provider,
		// its connection went with it, and the session ends at the
		// app's next MAIL: record why.
		if cut {
			if d := f.app.takeTooLarge(); d != nil {
				f.fail(d)
			} else {
				f.fail(errors.New("the app aborted its BDAT transfer after the message had started at the provider, so the provider connection was closed to drop it"))
			}
		}
		return err
	case proxy.IsTimeout(err):
		// Audited once the conversation is over (result).
		return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2},
			Message: "no data from the app for command_timeout; the message was not sent"}
	}
	f.fail(fmt.Errorf("the app's connection failed during the message: %w", err))
	return &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2},
		Message: "the app's connection failed during the message; it was not sent"}
}
