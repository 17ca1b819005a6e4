//go:build !linux

package server

import (
	"io"
	"net"
)

// newSockIO returns c: raw socket I/O is for Linux.
func newSockIO(c net.Conn) io.ReadWriter { return c }

// writeMore writes b, the head of an answer whose body follows.
func writeMore(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}
