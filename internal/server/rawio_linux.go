package server

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a connection's non-blocking socket with raw system calls, waiting in
// the runtime's network poller (and so keeping deadlines) only when the socket is not ready.
//
// net.Conn's Read and Write enter the scheduler's blocking-syscall protocol for every call: a
// read or write of a loopback socket runs the peer's TCP receive path too and takes tens of
// microseconds, long enough for the runtime's monitor to take the P away, start another thread
// to run it, and park this one when the call returns. On two CPUs that churn (futex wake-ups and
// context switches) was a fifth of a narinfo answer's CPU. A read or write of a non-blocking
// socket never sleeps in the kernel, so it is the goroutine's own work, not a blocking call, and
// needs none of that.
type sockIO struct {
	c     net.Conn
	rc    syscall.RawConn
	buf   []byte  // the argument of the Read or Write in progress
	flags uintptr // send(2) flags of the Write in progress
	n     int
	err   error

	readFn, writeFn func(fd uintptr) bool // made once: a closure per call would be an allocation
}

// newSockIO returns c's socket I/O, or c itself when it is not a socket this can drive.
func newSockIO(c net.Conn) io.ReadWriter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	s := &sockIO{c: c, rc: rc}
	s.readFn, s.writeFn = s.read, s.write
	return s
}

func (s *sockIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.buf, s.n, s.err = p, 0, nil
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, s.opError("read", err) // closed, or past the read deadline
	}
	s.buf = nil
	if s.err != nil {
		return s.n, s.opError("read", s.err)
	}
	if s.n == 0 {
		return 0, io.EOF
	}
	return s.n, nil
}

func (s *sockIO) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)))
		switch errno {
		case 0:
			s.n = int(n)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits until there is something to read
		default:
			s.err = errno
			return true
		}
	}
}

// Write sends p; a peer that has gone is an EPIPE, not a SIGPIPE (MSG_NOSIGNAL).
func (s *sockIO) Write(p []byte) (int, error) { return s.send(p, syscall.MSG_NOSIGNAL) }

// WriteMore sends p, the head of an answer whose body the kernel sends next (sendfile), with
// MSG_MORE: the head then leaves in the body's first segment instead of a small one of its own,
// one packet and one wake-up of the client fewer per NAR (what nginx's tcp_nopush does with two
// more system calls).
func (s *sockIO) WriteMore(p []byte) (int, error) {
	return s.send(p, syscall.MSG_MORE|syscall.MSG_NOSIGNAL)
}

func (s *sockIO) send(p []byte, flags uintptr) (int, error) {
	s.buf, s.flags, s.n, s.err = p, flags, 0, nil
	if len(p) == 0 {
		return 0, nil
	}
	err := s.rc.Write(s.writeFn)
	s.buf = nil
	if err == nil {
		err = s.err
	}
	if err != nil {
		return s.n, s.opError("write", err)
	}
	return s.n, nil
}

func (s *sockIO) write(fd uintptr) bool {
	for s.n < len(s.buf) {
		b := s.buf[s.n:]
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), s.flags, 0, 0)
		switch errno {
		case 0:
			s.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits until the socket is writable
		default:
			s.err = errno
			return true
		}
	}
	return true
}

func (s *sockIO) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: s.c.LocalAddr().Network(), Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}

// writeMore writes b to w with WriteMore when w has it (a socket), else with Write.
func writeMore(w io.Writer, b []byte) error {
	if m, ok := w.(interface{ WriteMore([]byte) (int, error) }); ok {
		_, err := m.WriteMore(b)
		return err
	}
	_, err := w.Write(b)
	return err
}
