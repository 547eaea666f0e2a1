//go:build !linux

package proxy

import "net"

// setLowat is Linux-only; elsewhere the relay coalesces with timers.
func setLowat(net.Conn, int) bool { return false }
