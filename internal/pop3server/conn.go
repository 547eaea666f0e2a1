package pop3server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// maxLine bounds one line, CRLF included: a longer one ends the session.
const maxLine = 8 << 10

// maxCommand is the longest command line, CRLF included, that RFC 2449
// §4 lets a client send; a longer one is refused. SASL responses to a
// "+" challenge may be longer (RFC 5034 §4), up to maxLine.
const maxCommand = 255

// writeTimeout bounds one flush of responses to the client.
const writeTimeout = time.Minute

var errLineTooLong = errors.New("line too long")

// conn is one session (RFC 1939 §3): the AUTHORIZATION state until mbox
// is set, then TRANSACTION, then UPDATE on QUIT.
type conn struct {
	srv *Server
	c   net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer

	user    string // the USER argument, until PASS
	hasUser bool

	mbox    Mailbox // nil in the AUTHORIZATION state
	msgs    []Message
	deleted []bool

	done bool
}

func newConn(s *Server, c net.Conn) *conn {
	return &conn{srv: s, c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}
}

func (c *conn) serve() {
	defer func() {
		if c.mbox != nil {
			if err := c.mbox.Close(); err != nil {
				c.srv.logf("releasing a maildrop: %v", err)
			}
		}
		c.close()
	}()
	c.reply("+OK %s", c.srv.opts.Greeting)
	for !c.done {
		// Answers to pipelined commands go out together (RFC 2449 §6.6).
		if c.br.Buffered() == 0 {
			if err := c.flush(); err != nil {
				return
			}
		}
		c.c.SetReadDeadline(time.Now().Add(c.srv.opts.IdleTimeout))
		line, err := c.readLine()
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				c.reply("-ERR Line too long")
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			default:
				c.srv.logf("reading a command: %v", err)
			}
			c.flush()
			return
		}
		if len(line)+2 > maxCommand {
			c.reply("-ERR Command line too long (RFC 2449 allows %d octets)", maxCommand)
			continue
		}
		// Bounds the answer, which may be a whole message.
		c.c.SetWriteDeadline(time.Now().Add(c.srv.opts.IdleTimeout))
		keyword, arg, _ := strings.Cut(line, " ")
		keyword = strings.ToUpper(keyword)
		if c.mbox == nil {
			c.authorization(keyword, arg)
		} else {
			c.transaction(keyword, arg)
		}
	}
	c.flush()
}

// close ends the connection: the write side first, then a short drain of
// what the client still sends, so that the last answer is not lost to a
// reset caused by unread input.
func (c *conn) close() {
	closeWrite(c.c)
	c.c.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c.c, 64<<10)
	c.c.Close()
}

// closeWrite half-closes c and the connection below it (TLS close_notify,
// then the TCP FIN).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		closeWrite(nc.NetConn())
	}
}

// readLine reads one line (CRLF or LF) without its ending.
func (c *conn) readLine() (string, error) {
	var line []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		if len(line)+len(frag) > maxLine {
			return "", errLineTooLong
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return string(bytes.TrimSuffix(line, []byte("\r"))), nil
}

func (c *conn) reply(format string, args ...any) {
	fmt.Fprintf(c.bw, format, args...)
	c.bw.WriteString("\r\n")
}

func (c *conn) flush() error {
	c.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.bw.Flush()
}

// code returns "[CODE] " when the server offers response codes (RFC 2449
// §8); the AUTH code also needs AUTH-RESP-CODE (RFC 3206 §6).
func (c *conn) code(code string) string {
	if !c.srv.caps[capRespCodes] || (code == "AUTH" && !c.srv.caps[capAuthRespCode]) {
		return ""
	}
	return "[" + code + "] "
}

func (c *conn) isTLS() bool {
	_, ok := c.c.(*tls.Conn)
	return ok
}

// authorization runs a command of the AUTHORIZATION state (RFC 1939 §4).
func (c *conn) authorization(keyword, arg string) {
	switch keyword {
	case "CAPA":
		c.capa()
	case "STLS":
		c.stls()
	case "USER":
		c.userCmd(arg)
	case "PASS":
		c.pass(arg)
	case "AUTH":
		c.auth(arg)
	case "QUIT":
		c.reply("+OK Bye")
		c.done = true
	case "APOP":
		c.reply("-ERR APOP is not supported")
	default:
		c.reply("-ERR Unknown command or not valid before login")
	}
}

// capa lists the capabilities of the current state (RFC 2449 §5).
func (c *conn) capa() {
	c.reply("+OK Capability list follows")
	caps := c.srv.caps
	for _, name := range []string{capTop, capUIDL} {
		if caps[name] {
			c.reply("%s", name)
		}
	}
	if c.mbox == nil {
		if caps[capUser] {
			c.reply("USER")
		}
		if caps[capSASL] {
			c.reply("SASL PLAIN LOGIN")
		}
	}
	for _, name := range []string{capRespCodes, capAuthRespCode, capPipelining} {
		if caps[name] {
			c.reply("%s", name)
		}
	}
	if c.mbox == nil && c.offersSTLS() {
		c.reply("STLS")
	}
	c.reply(".")
}

func (c *conn) offersSTLS() bool {
	return c.srv.opts.TLSConfig != nil && !c.isTLS()
}

// stls upgrades the connection to TLS (RFC 2595 §4). The client's
// earlier USER is forgotten, as that section requires.
func (c *conn) stls() {
	switch {
	case c.isTLS():
		c.reply("-ERR Already under TLS")
		return
	case !c.offersSTLS():
		c.reply("-ERR STLS is not offered")
		return
	case c.br.Buffered() > 0:
		// Bytes sent behind STLS would be taken as sent under TLS.
		c.reply("-ERR STLS must be the last command of a pipeline")
		return
	}
	c.reply("+OK Begin TLS negotiation")
	if err := c.flush(); err != nil {
		c.done = true
		return
	}
	tc := tls.Server(c.c, c.srv.opts.TLSConfig)
	tc.SetDeadline(time.Now().Add(writeTimeout))
	if err := tc.Handshake(); err != nil {
		c.srv.logf("STLS handshake: %v", err)
		c.done = true
		return
	}
	tc.SetDeadline(time.Time{})
	c.c = tc
	c.br = bufio.NewReaderSize(tc, 4096)
	c.bw = bufio.NewWriterSize(tc, 4096)
	c.user, c.hasUser = "", false
}
