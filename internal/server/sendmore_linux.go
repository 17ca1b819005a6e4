package server

import (
	"net"
	"syscall"
)

// writeMore writes b, the head of an answer whose body the kernel sends next (sendfile), with
// MSG_MORE: the head then leaves in the body's first segment instead of a small one of its own,
// one packet and one wake-up of the client fewer per NAR (what nginx's tcp_nopush does with two
// more system calls).
func writeMore(c net.Conn, b []byte) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		_, err := c.Write(b)
		return err
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := syscall.SendmsgN(int(fd), b, nil, nil, syscall.MSG_MORE|syscall.MSG_NOSIGNAL)
			switch err {
			case nil:
				b = b[n:]
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until the socket is writable
			default:
				werr = &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
				return true
			}
		}
		return true
	})
	if werr != nil {
		return werr
	}
	return err
}
