//go:build !linux

package server

import "net"

// writeMore writes b, the head of an answer whose body follows.
func writeMore(c net.Conn, b []byte) error {
	_, err := c.Write(b)
	return err
}
