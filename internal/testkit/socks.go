package testkit

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SOCKS5 is a SOCKS5 server (RFC 1928, RFC 1929) written for the
// tests: it records every request (the address asked for, the
// credentials), answers with a chosen reply code, and otherwise connects
// to 127.0.0.1, resolving names by its own table, never by DNS.
type SOCKS5 struct {
	Addr netip.AddrPort
	// Names maps a host name to the address it "resolves" to; a name not
	// in it gets reply 4 (host unreachable).
	Names map[string]string

	mu    sync.Mutex
	reqs  []SOCKSRequest
	reply byte
	// user and pass, when set, are required.
	user, pass string
}

// RequireAuth makes the server require user and pass (method 2).
func (s *SOCKS5) RequireAuth(user, pass string) {
	s.mu.Lock()
	s.user, s.pass = user, pass
	s.mu.Unlock()
}

// SetReply makes the server answer every CONNECT with code (0: connect).
func (s *SOCKS5) SetReply(code byte) {
	s.mu.Lock()
	s.reply = code
	s.mu.Unlock()
}

// SOCKSRequest is one CONNECT the server received.
type SOCKSRequest struct {
	ATYP       byte // 1 IPv4, 3 name, 4 IPv6
	Host       string
	Port       int
	User, Pass string
	AuthMethod byte
}

// NewSOCKS5 starts a SOCKS5 server on 127.0.0.1 that resolves names by
// names. It stops with the test.
func NewSOCKS5(t testing.TB, names map[string]string) *SOCKS5 {
	s := &SOCKS5{Names: names}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		s.handle(c)
	})
	s.Addr = netip.MustParseAddrPort(ln.Addr().String())
	return s
}

// Requests returns the requests so far.
func (s *SOCKS5) Requests() []SOCKSRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SOCKSRequest(nil), s.reqs...)
}

func (s *SOCKS5) handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var req SOCKSRequest
	s.mu.Lock()
	user, pass := s.user, s.pass
	s.mu.Unlock()
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil || head[0] != 5 {
		return
	}
	methods := make([]byte, head[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	has := func(m byte) bool { return strings.IndexByte(string(methods), m) >= 0 }
	switch {
	case has(2):
		c.Write([]byte{5, 2})
		req.AuthMethod = 2
		b := make([]byte, 2)
		if _, err := io.ReadFull(br, b); err != nil || b[0] != 1 {
			return
		}
		u := make([]byte, b[1])
		io.ReadFull(br, u)
		l, _ := br.ReadByte()
		p := make([]byte, l)
		io.ReadFull(br, p)
		req.User, req.Pass = string(u), string(p)
		if user != "" && (req.User != user || req.Pass != pass) {
			s.record(req) // before the reply, which lets the client go on
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	case user == "" && has(0):
		c.Write([]byte{5, 0})
	default:
		c.Write([]byte{5, 0xff})
		return
	}
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(br, hdr); err != nil || hdr[0] != 5 || hdr[1] != 1 {
		return
	}
	req.ATYP = hdr[3]
	switch hdr[3] {
	case 1, 4:
		ip := make([]byte, map[byte]int{1: 4, 4: 16}[hdr[3]])
		io.ReadFull(br, ip)
		a, _ := netip.AddrFromSlice(ip)
		req.Host = a.String()
	case 3:
		l, _ := br.ReadByte()
		name := make([]byte, l)
		io.ReadFull(br, name)
		req.Host = string(name)
	default:
		return
	}
	pb := make([]byte, 2)
	io.ReadFull(br, pb)
	req.Port = int(binary.BigEndian.Uint16(pb))
	s.record(req)
	answer := func(code byte) { c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0}) }
	s.mu.Lock()
	reply := s.reply
	s.mu.Unlock()
	if reply != 0 {
		answer(reply)
		return
	}
	ip := req.Host
	if req.ATYP == 3 {
		var ok bool
		if ip, ok = s.Names[req.Host]; !ok {
			answer(4)
			return
		}
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(req.Port)), 5*time.Second)
	if err != nil {
		answer(5)
		return
	}
	defer up.Close()
	answer(0)
	c.SetDeadline(time.Time{})
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
}

func (s *SOCKS5) record(r SOCKSRequest) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
}
