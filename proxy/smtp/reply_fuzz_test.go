package smtp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// chunkConn reads its data in chunks of the sizes given, as a network
// does.
type chunkConn struct {
	net.Conn
	data  []byte
	sizes []byte
}

func (c *chunkConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(b)
	if len(c.sizes) > 0 {
		n = min(n, int(c.sizes[0])+1)
		c.sizes = c.sizes[1:]
	}
	n = copy(b[:min(n, len(b))], c.data)
	c.data = c.data[n:]
	return n, nil
}

// FuzzReplyConn: whatever the provider sends and however it arrives, what
// go-smtp's client reads of one reply is a prefix of it, at most maxReply
// bytes, with no line over maxReplyLine; past a bound every read fails
// with errReplyTooLong.
func FuzzReplyConn(f *testing.F) {
	f.Add([]byte("250-a\r\n250 b\r\n"), []byte{3, 0, 7})
	f.Add(bytes.Repeat([]byte("z"), maxReplyLine+5), []byte{200, 200, 200})
	f.Add(bytes.Repeat([]byte("250-xxxxxxxx\r\n"), 5000), []byte{255})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		r := newReplyConn(&chunkConn{data: data, sizes: sizes}, nil)
		var got []byte
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == nil {
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, errReplyTooLong) {
				t.Fatalf("read error %v", err)
			}
			if errors.Is(err, errReplyTooLong) {
				if _, err := r.Read(buf); !errors.Is(err, errReplyTooLong) {
					t.Fatalf("a read after the bound: %v", err)
				}
			}
			break
		}
		if !bytes.HasPrefix(data, got) || len(got) > maxReply {
			t.Fatalf("read %d bytes, not a prefix of at most %d", len(got), maxReply)
		}
		for _, l := range bytes.Split(got, []byte("\n")) {
			if len(l) > maxReplyLine {
				t.Fatalf("a line of %d bytes was read", len(l))
			}
		}
	})
}
