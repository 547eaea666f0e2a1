package pop3server

import (
	"bufio"
	"errors"
	"io"
	"net/textproto"
	"strconv"
	"strings"
)

// transaction runs a command of the TRANSACTION state (RFC 1939 §5, §7).
func (c *conn) transaction(keyword, arg string) {
	switch keyword {
	case "STAT":
		n, size := c.stat()
		c.reply("+OK %d %d", n, size)
	case "LIST":
		c.list(arg, func(i int) string { return strconv.FormatInt(c.msgs[i].Size, 10) })
	case "UIDL":
		if !c.srv.caps[capUIDL] {
			c.reply("-ERR UIDL is not offered")
			return
		}
		c.list(arg, func(i int) string { return c.msgs[i].UID })
	case "RETR":
		if i, ok := c.message(arg); ok {
			c.retr(i, -1)
		}
	case "TOP":
		if !c.srv.caps[capTop] {
			c.reply("-ERR TOP is not offered")
			return
		}
		msg, lines, _ := strings.Cut(arg, " ")
		n, err := strconv.Atoi(lines)
		if err != nil || n < 0 {
			c.reply("-ERR TOP takes a message number and a number of lines")
			return
		}
		if i, ok := c.message(msg); ok {
			c.retr(i, n)
		}
	case "DELE":
		if i, ok := c.message(arg); ok {
			c.deleted[i] = true
			c.reply("+OK Message %d deleted", i+1)
		}
	case "NOOP":
		c.reply("+OK")
	case "RSET":
		clear(c.deleted)
		n, size := c.stat()
		c.reply("+OK Maildrop has %d messages (%d octets)", n, size)
	case "CAPA":
		c.capa()
	case "QUIT":
		c.update()
	default:
		c.reply("-ERR Unknown command")
	}
}

// stat counts the messages not marked as deleted.
func (c *conn) stat() (n int, size int64) {
	for i, m := range c.msgs {
		if !c.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

// message parses a message number; it answers -ERR itself when there is
// no such message (or it is marked as deleted).
func (c *conn) message(arg string) (int, bool) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > len(c.msgs) || c.deleted[n-1] {
		c.reply("-ERR No such message")
		return 0, false
	}
	return n - 1, true
}

// list answers LIST or UIDL: one message, or all of them as a multi-line
// response.
func (c *conn) list(arg string, value func(i int) string) {
	if arg != "" {
		if i, ok := c.message(arg); ok {
			c.reply("+OK %d %s", i+1, value(i))
		}
		return
	}
	c.reply("+OK")
	for i := range c.msgs {
		if !c.deleted[i] {
			c.reply("%d %s", i+1, value(i))
		}
	}
	c.reply(".")
}

// retr sends message i, whole (bodyLines < 0, RETR) or its header and
// first bodyLines lines (TOP), dot-stuffed and ended with "." (RFC 1939
// §3). A failure half-way leaves the client with a cut response, so it
// ends the session.
func (c *conn) retr(i, bodyLines int) {
	rc, err := c.mbox.Open(c.msgs[i].UID)
	if err != nil {
		c.srv.logf("opening a message: %v", err)
		c.reply("-ERR %sCannot read the message", c.code("SYS/TEMP"))
		return
	}
	defer rc.Close()
	if bodyLines < 0 {
		c.reply("+OK %d octets", c.msgs[i].Size)
	} else {
		c.reply("+OK Top of message follows")
	}
	dw := textproto.NewWriter(c.bw).DotWriter()
	if bodyLines < 0 {
		_, err = io.Copy(dw, rc)
	} else {
		err = copyTop(dw, rc, bodyLines)
	}
	if err == nil {
		err = dw.Close()
	}
	if err != nil {
		c.srv.logf("sending a message: %v", err)
		c.done = true
		c.c.Close()
	}
}

// copyTop copies the header, the blank line and n lines of the body.
func copyTop(w io.Writer, r io.Reader, n int) error {
	br := bufio.NewReader(r)
	inBody := false
	for !inBody || n > 0 {
		line, err := br.ReadString('\n')
		if _, werr := io.WriteString(w, line); werr != nil {
			return werr
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch {
		case inBody:
			n--
		case line == "\r\n" || line == "\n":
			inBody = true
		}
	}
	return nil
}

// update is QUIT in the TRANSACTION state: the UPDATE state removes the
// messages marked as deleted (RFC 1939 §6).
func (c *conn) update() {
	c.done = true
	var uids []string
	for i, m := range c.msgs {
		if c.deleted[i] {
			uids = append(uids, m.UID)
		}
	}
	if len(uids) > 0 {
		if err := c.mbox.Delete(uids); err != nil {
			c.srv.logf("removing messages: %v", err)
			c.reply("-ERR %sSome deleted messages were not removed", c.code("SYS/TEMP"))
			return
		}
	}
	n, _ := c.stat()
	c.reply("+OK Bye (%d messages left)", n)
}
