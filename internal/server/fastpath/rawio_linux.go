package fastpath

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
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
//
// Writes are bounded by progress, not by a total time: a write that finds the socket full sets
// the write deadline writeIdle ahead, and moves it again each time the socket was found full
// after bytes moved. When the deadline passes, the send queue is looked at: if it shrank since
// the deadline was set, the client did take bytes (the kernel wakes a writer only once a good
// part of a large send buffer is free), and the write goes on with a new deadline. So a client
// that reads nothing for writeIdle fails the write, and one that reads slowly never does. A
// write that never waits touches no timer.
type sockIO struct {
	c     net.Conn
	rc    syscall.RawConn
	buf   []byte  // the argument of the Read or Write in progress
	flags uintptr // send(2) flags of the Write in progress
	n     int
	err   error

	writeIdle time.Duration
	armed     bool // the write deadline is set, for the write in progress
	armedAt   int  // bytes written when it was set
	outq      int  // bytes in the send queue then (unsent or not acknowledged)
	src       int  // sendfile: the file
	size      int  // sendfile: bytes to send

	readFn, writeFn, sendFileFn func(fd uintptr) bool // made once: a closure per call would be an allocation
}

// rawWrite runs fn in RawConn.Write until it is done or fails, going on past a deadline the
// client's reading moved.
func (s *sockIO) rawWrite(fn func(fd uintptr) bool) error {
	for {
		err := s.rc.Write(fn)
		if err == nil || !s.armed || !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		drained := false
		s.rc.Control(func(fd uintptr) {
			if q := sendQueue(fd); q < s.outq {
				s.outq, drained = q, true
			}
		})
		if !drained {
			return err
		}
		s.c.SetWriteDeadline(time.Now().Add(s.writeIdle))
	}
}

// sendQueue is how many bytes fd's send queue holds (SIOCOUTQ, which is TIOCOUTQ); -1 if it cannot tell.
func sendQueue(fd uintptr) int {
	var q int32
	if _, _, errno := syscall.RawSyscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&q))); errno != 0 {
		return -1
	}
	return int(q)
}

// newSockIO returns c's socket I/O, with writes that fail after writeIdle without progress
// (0: never).
func newSockIO(c net.Conn, writeIdle time.Duration) connIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return &plainIO{c: c, writeIdle: writeIdle}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return &plainIO{c: c, writeIdle: writeIdle}
	}
	s := &sockIO{c: c, rc: rc, writeIdle: writeIdle}
	s.readFn, s.writeFn, s.sendFileFn = s.read, s.write, s.sendFile
	return s
}

func (s *sockIO) setWriteIdle(d time.Duration) { s.writeIdle = d }

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
	err := s.rawWrite(s.writeFn)
	s.buf = nil
	if err = s.disarm(err); err != nil {
		return s.n, s.opError("write", err)
	}
	return s.n, nil
}

// SendFile sends size bytes of f from its current offset with sendfile(2), as io.Copy from an
// *os.File to a TCP connection does, but with the progress bound of Write.
func (s *sockIO) SendFile(f *os.File, size int64) (int64, error) {
	s.src, s.size, s.n, s.err = int(f.Fd()), int(size), 0, nil
	if size <= 0 {
		return 0, nil
	}
	err := s.rawWrite(s.sendFileFn)
	runtime.KeepAlive(f)
	if err = s.disarm(err); err != nil {
		return int64(s.n), s.opError("sendfile", err)
	}
	return int64(s.n), nil
}

func (s *sockIO) sendFile(fd uintptr) bool {
	for s.n < s.size {
		// Not a raw system call: reading the file may wait for the disk.
		n, err := syscall.Sendfile(int(fd), s.src, nil, min(s.size-s.n, 1<<30))
		if n > 0 {
			s.n += n
		}
		switch err {
		case nil:
			if n == 0 {
				s.err = io.ErrUnexpectedEOF // the file is shorter than it was
				return true
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			s.arm(fd)
			return false
		default:
			s.err = err
			return true
		}
	}
	return true
}

// arm sets the write deadline writeIdle ahead when the socket is full: the first time in this
// write, or again once bytes moved since the last time. It runs inside RawConn.Write, whose
// wait in the poller then keeps the new deadline.
func (s *sockIO) arm(fd uintptr) {
	if s.writeIdle <= 0 || s.armed && s.n == s.armedAt {
		return
	}
	s.c.SetWriteDeadline(time.Now().Add(s.writeIdle))
	s.armed, s.armedAt, s.outq = true, s.n, sendQueue(fd)
}

// disarm clears a deadline arm set, so that the next write does not start past it, and returns
// the write's error: err from RawConn.Write, else the one the callback kept; a deadline that
// passed is a *writeStalledError.
func (s *sockIO) disarm(err error) error {
	if err == nil {
		err = s.err
	}
	if s.armed {
		s.armed = false
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			return &writeStalledError{s.writeIdle}
		}
		s.c.SetWriteDeadline(time.Time{})
	}
	return err
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
			s.arm(fd)
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
