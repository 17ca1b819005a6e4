//go:build !linux

package server

import (
	"io"
	"net"
)

// newSockIO returns c: raw socket I/O is for Linux.
func newSockIO(c net.Conn) io.ReadWriter { return c }
