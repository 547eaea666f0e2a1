package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// Relay buffer sizes. An idle session holds no relay buffer: each read
// borrows a small one from a pool, and a direction that is moving data
// borrows a big one for as long as data keeps coming (see pump).
const (
	smallBuf  = 2 << 10
	bigBuf    = 128 << 10
	burstHold = 500 * time.Millisecond
	// linger is how long the remaining direction may stay quiet once the
	// other has ended (half-close), so that a session cannot hang on a
	// peer that never closes its side.
	linger = 5 * time.Second
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	bigPool   = sync.Pool{New: func() any { b := make([]byte, bigBuf); return &b }}
)

// ErrIdle ends a relayed session after the idle limit with no traffic in
// either direction.
var ErrIdle = errors.New("no traffic in either direction for idle_timeout")

// Relay splices the app and the provider after a successful login and
// returns when both directions have ended. clientPending and upPending are
// bytes the front had already read from each side (a command pipelined
// behind the login, a response behind the login reply); they are delivered
// first, so nothing is lost. Data is copied unmodified in both directions
// — except through toProvider, when not nil: it wraps the writer of the
// app-to-provider direction (the IMAP front's ID filter). When one side
// closes its sending direction the other is half-closed too.
func (s *Session) Relay(client net.Conn, clientPending []byte, up net.Conn, upPending []byte, toProvider func(io.Writer) io.Writer) error {
	idle := s.Settings.Limits.IdleTimeout
	r := &relay{idle: idle}
	r.touch()
	var upW io.Writer = up
	if toProvider != nil {
		upW = toProvider(up)
	}
	if err := writeAll(up, upW, clientPending, idle); err != nil {
		return fmt.Errorf("relaying to the provider: %w", err)
	}
	if err := writeAll(client, client, upPending, idle); err != nil {
		return fmt.Errorf("relaying to the app: %w", err)
	}
	done := make(chan *panicked, 1)
	go proxyCopy(done, r, "app to provider", up, upW, client)
	r.end("provider to app", client, up, r.pump(client, client, up))
	if p := <-done; p != nil {
		// On the session's goroutine, where the listener contains it:
		// the session ends with session.panic, the others go on.
		panic(p)
	}
	// The first failure is the cause; the other direction's error is
	// usually only the consequence of closing both connections.
	if r.err != nil && !errors.Is(r.err, errLinger) {
		return r.err
	}
	return nil
}

// proxyCopy copies the app's bytes to the provider. It is a named function
// so that a goroutine dump says what each relay goroutine is.
// A panic here (the ID filter parses what the app sends) would end the
// whole process: it is caught, both connections closed so that the other
// direction ends too, and handed to Relay.
func proxyCopy(done chan<- *panicked, r *relay, dir string, dst net.Conn, w io.Writer, src net.Conn) {
	defer func() {
		var p *panicked
		if v := recover(); v != nil {
			p = &panicked{value: v, stack: debug.Stack()}
			dst.Close()
			src.Close()
		}
		done <- p
	}()
	r.end(dir, dst, src, r.pump(dst, w, src))
}

// errLinger ends the remaining direction after a half-close.
var errLinger = errors.New("quiet after the other direction ended")

// relay is the state the two directions of one session share.
type relay struct {
	idle time.Duration

	mu         sync.Mutex
	last       time.Time // last byte moved, either way
	halfClosed bool      // one direction has ended
	err        error     // the first direction's failure
}

// quiet is how long the relay may go without traffic.
func (r *relay) quiet() time.Duration {
	if r.halfClosed {
		return linger
	}
	return r.idle
}

func (r *relay) touch() {
	r.mu.Lock()
	r.last = time.Now()
	r.mu.Unlock()
}

// setDeadline sets src's read deadline under the lock, so that end's
// deadline cannot be overwritten by a stale one.
func (r *relay) setDeadline(src net.Conn, holdBig bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.last.Add(r.quiet())
	if holdBig {
		d = earlier(d, time.Now().Add(burstHold))
	}
	src.SetReadDeadline(d)
}

// expired tells, after a read timeout, why it happened.
func (r *relay) expired() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.last) < r.quiet() {
		return nil // the other direction was busy: keep reading
	}
	if r.halfClosed {
		return errLinger
	}
	return ErrIdle
}

// end closes what a finished direction leaves behind: after a clean end of
// input, the write side of dst (half-close), and the other direction may
// then go on until it has been quiet for linger; after an error, both
// connections.
func (r *relay) end(dir string, dst, src net.Conn, err error) {
	if err != nil {
		r.mu.Lock()
		if r.err == nil {
			r.err = fmt.Errorf("%s: %w", dir, err)
		}
		r.mu.Unlock()
		dst.Close()
		src.Close()
		return
	}
	closeWrite(dst)
	closeRead(src)
	r.mu.Lock()
	r.halfClosed = true
	dst.SetReadDeadline(r.last.Add(linger))
	r.mu.Unlock()
}

// pump copies src to dst, writing through w (dst itself, or a filter
// writing to it), until src ends. An idle direction blocks reading a single
// byte, so that an idle session holds no relay buffer; when it comes, the
// rest of what has arrived is read behind it into a small pooled buffer and
// written on, and the buffer goes back. Once such a read fills the small
// buffer, a transfer is under way: pump borrows a big buffer (see bulk) and
// keeps it while data keeps arriving.
func (r *relay) pump(dst net.Conn, w io.Writer, src net.Conn) error {
	first := make([]byte, 1)
	_, isTLS := src.(*tls.Conn)
	b := &bulk{src: src, tls: isTLS}
	defer b.release()
	for {
		if b.lowat {
			src.SetReadDeadline(time.Now().Add(tailWait))
		} else {
			r.setDeadline(src, b.buf != nil)
		}
		var buf []byte
		var small *[]byte
		var n int
		var err error
		if b.buf != nil {
			buf = *b.buf
			n, err = src.Read(buf)
		} else {
			buf = first
			n, err = src.Read(first)
			if n == 1 && err == nil {
				small = smallPool.Get().(*[]byte)
				buf = *small
				buf[0] = first[0]
				n, err = readRest(src, buf, 1)
			}
		}
		paused := false
		if n > 0 && err == nil && b.buf != nil && isTLS {
			n, paused, err = b.fill(buf, n)
		}
		if n > 0 {
			r.touch()
			dst.SetWriteDeadline(time.Now().Add(r.idle))
			_, werr := w.Write(buf[:n])
			if small != nil {
				smallPool.Put(small)
			}
			if werr != nil {
				return werr
			}
		}
		if err != nil {
			if IsTimeout(err) {
				if b.buf != nil {
					b.release()
					continue
				}
				if why := r.expired(); why != nil {
					return why
				}
				continue
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case b.buf == nil && n == smallBuf:
			b.borrow()
		case b.buf != nil && (n < smallBuf || paused):
			b.release()
		}
	}
}

// bulk is one direction's state during a transfer: the big buffer, and how
// records are gathered into it before one write to the other side. Every
// wake-up costs (a park, a futex, a thread that spins looking for work),
// and a provider sends a TLS record of up to 16 KiB at a time, so the relay
// lets records queue and takes them in batches:
//
//   - On Linux the kernel does the waiting: SO_RCVLOWAT on the socket
//     (bulkLowat) wakes the relay only when that much has arrived, and a
//     read that waits longer than tailWait ends the batch (the end of a
//     response, or a provider slower than bulkLowat per tailWait).
//   - Elsewhere, or when the option cannot be set, pump sleeps
//     coalesceSleep and then drains what arrives within coalesceWait.
type bulk struct {
	src net.Conn
	tls bool // only TLS sources are batched: a plain read returns what is there
	buf *[]byte
	// lowat: SO_RCVLOWAT is set to bulkLowat on src.
	lowat bool
	// lastFull: the last timed drain filled the buffer, so the provider is
	// faster than the relay and there is no point in sleeping.
	lastFull bool
}

func (b *bulk) borrow() {
	b.buf = bigPool.Get().(*[]byte)
	if b.tls {
		b.lowat = setLowat(b.src, bulkLowat)
	}
}

// release gives the big buffer back and lets the kernel wake the relay for
// every byte again: an idle direction must see the app's next command.
func (b *bulk) release() {
	if b.buf != nil {
		bigPool.Put(b.buf)
		b.buf = nil
	}
	if b.lowat {
		setLowat(b.src, 1)
		b.lowat = false
	}
}

// fill adds records to buf[:n] before they are written on. paused tells
// that the transfer paused or ended (a read waited tailWait), so that the
// caller gives the buffer back.
func (b *bulk) fill(buf []byte, n int) (int, bool, error) {
	if !b.lowat {
		if !b.lastFull {
			time.Sleep(coalesceSleep)
		}
		var err error
		n, b.lastFull, err = drainBuffered(b.src, buf, n)
		return n, false, err
	}
	for n < len(buf)-16<<10 {
		b.src.SetReadDeadline(time.Now().Add(tailWait))
		m, err := b.src.Read(buf[n:])
		n += m
		if IsTimeout(err) {
			// Fewer than bulkLowat bytes are queued, maybe the end of
			// a record among them: take them now.
			setLowat(b.src, 1)
			b.lowat = false
			n, err = readRest(b.src, buf, n)
			return n, true, err
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// bulkLowat is how many bytes the kernel gathers before it wakes a relay
// in a transfer (SO_RCVLOWAT): four records of 16 KiB, half the big
// buffer. tailWait bounds the wait for them, and so how much later than a
// record-by-record relay the end of a response reaches the other side.
const (
	bulkLowat = 64 << 10
	tailWait  = time.Millisecond
)

// readRest reads what has already arrived behind the byte an idle
// direction woke up on (buf[:n]). Usually it is there: the rest of the TCP
// segment, or of the TLS record *tls.Conn has decrypted. Should the peer
// have sent that one byte alone, the read gives up after restWait; a read
// timeout is not a lasting error, not even for a *tls.Conn.
func readRest(src net.Conn, buf []byte, n int) (int, error) {
	src.SetReadDeadline(time.Now().Add(restWait))
	m, err := src.Read(buf[n:])
	if IsTimeout(err) {
		err = nil
	}
	return n + m, err
}

// restWait bounds how long readRest waits for bytes that have not come.
const restWait = time.Millisecond

// drainBuffered adds more TLS records to buf[:n] before the relay writes
// them on, for as long as each arrives within coalesceWait and a whole
// record still fits; full tells whether it stopped because the buffer was
// full rather than because the wait ran out. In a bulk transfer one write
// then carries several records, which saves system calls and wake-ups on
// both sides of the relay; at the end of a burst the last write waits
// coalesceWait at most. A read timeout is not a lasting error for a
// *tls.Conn, so the connection is unharmed. It is used only while the big
// buffer is borrowed, that is, only while data is flowing.
func drainBuffered(src net.Conn, buf []byte, n int) (int, bool, error) {
	src.SetReadDeadline(time.Now().Add(coalesceWait))
	for n < len(buf)-16<<10 {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			if IsTimeout(err) {
				err = nil
			}
			return n, false, err
		}
	}
	return n, true, nil
}

// coalesceSleep is how long pump lets records from a provider slower than
// the relay queue up in the kernel before it drains them. Waiting on the
// socket instead wakes the relay for every record: against Dovecot (about
// 100 MB/s, a 16 KiB record every 160 us) that is a park and a wake-up per
// record in mailproxy, and a short write and a wake-up per record in the
// app. A provider faster than the relay fills the buffer without waiting,
// and then pump does not sleep.
const coalesceSleep = 500 * time.Microsecond

// coalesceWait is how long a bulk transfer waits for the next record.
const coalesceWait = 200 * time.Microsecond

func writeAll(c net.Conn, w io.Writer, b []byte, timeout time.Duration) error {
	if len(b) == 0 {
		return nil
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := w.Write(b)
	return err
}

// closeWrite half-closes c and every connection below it (a TLS
// close_notify, then the TCP FIN).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		closeWrite(nc.NetConn())
	}
}

// closeRead closes the reading side of the TCP connection below c.
func closeRead(c net.Conn) {
	if cr, ok := c.(interface{ CloseRead() error }); ok {
		cr.CloseRead()
		return
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		closeRead(nc.NetConn())
	}
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
