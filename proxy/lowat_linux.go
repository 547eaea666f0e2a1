package proxy

import (
	"net"
	"syscall"
)

// setLowat sets SO_RCVLOWAT on the TCP socket below c: the kernel then
// wakes a reader only once n bytes are queued (or the read deadline
// passes). It reports whether it could.
func setLowat(c net.Conn, n int) bool {
	for {
		if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = nc.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	}); err != nil {
		return false
	}
	return serr == nil
}
