//go:build !linux

package fastpath

import (
	"io"
	"net"
	"time"
)

// newSockIO returns c's I/O through net.Conn: raw socket I/O is for Linux.
func newSockIO(c net.Conn, writeIdle time.Duration) connIO {
	return &plainIO{c: c, writeIdle: writeIdle}
}

// writeMore writes b, the head of an answer whose body follows.
func writeMore(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}
