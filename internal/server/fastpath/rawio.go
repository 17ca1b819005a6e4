package fastpath

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// connIO is how the fast path reads and writes a connection: with raw system calls on Linux
// (rawio_linux.go), else through net.Conn (plainIO).
type connIO interface {
	io.ReadWriter
	// SendFile sends size bytes of f from its current offset (sendfile(2) where there is one).
	SendFile(f *os.File, size int64) (int64, error)
	// setWriteIdle sets how long a write may make no progress before it fails (0: for ever).
	setWriteIdle(time.Duration)
}

// writeStalledError is a write to a client that took no bytes for the write idle timeout.
type writeStalledError struct{ idle time.Duration }

func (e *writeStalledError) Error() string {
	return "client read nothing for " + e.idle.String() + " (--write-idle-timeout)"
}

// Timeout makes the error a net.Error timeout, as the deadline it comes from.
func (e *writeStalledError) Timeout() bool   { return true }
func (e *writeStalledError) Temporary() bool { return true }

// WriteIdleListener returns ln with connections whose writes fail after idle without progress
// (0: never), for an http.Server without the fast path (which bounds its connections itself).
// Writes and files go out as on the fast path (connIO): a file with sendfile. It is not for a
// server with a WriteTimeout, whose write deadline these connections would move.
func WriteIdleListener(ln net.Listener, idle time.Duration) net.Listener {
	if idle <= 0 {
		return ln
	}
	return &idleListener{Listener: ln, idle: idle}
}

type idleListener struct {
	net.Listener
	idle time.Duration
}

func (l *idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &idleConn{Conn: c, io: newSockIO(c, l.idle)}, nil
}

// idleConn is a connection net/http serves, writing through a connIO: its writes and the files
// it sends with ReadFrom fail after the write idle timeout without progress. Reads are the
// connection's own.
type idleConn struct {
	net.Conn
	mu sync.Mutex // a connIO does one write at a time
	io connIO
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.io.Write(p)
}

// ReadFrom sends a file (net/http's http.ServeContent hands it as an io.LimitedReader of an
// *os.File) with sendfile; anything else through Write.
func (c *idleConn) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if f, ok := lr.R.(*os.File); ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			n, err := c.io.SendFile(f, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return io.Copy(writerOnly{c}, r)
}

func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// plainIO is connIO through net.Conn's methods. Each write gets writeIdle, and a file goes out
// in pieces of plainSendPiece, each with writeIdle.
type plainIO struct {
	c         net.Conn
	writeIdle time.Duration
}

const plainSendPiece = 1 << 20

func (p *plainIO) Read(b []byte) (int, error)   { return p.c.Read(b) }
func (p *plainIO) setWriteIdle(d time.Duration) { p.writeIdle = d }

func (p *plainIO) Write(b []byte) (int, error) {
	p.arm()
	n, err := p.c.Write(b)
	return n, p.disarm(err)
}

func (p *plainIO) SendFile(f *os.File, size int64) (int64, error) {
	var sent int64
	for sent < size {
		p.arm()
		n, err := io.CopyN(p.c, f, min(size-sent, plainSendPiece))
		sent += n
		if err = p.disarm(err); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func (p *plainIO) arm() {
	if p.writeIdle > 0 {
		p.c.SetWriteDeadline(time.Now().Add(p.writeIdle))
	}
}

func (p *plainIO) disarm(err error) error {
	if p.writeIdle <= 0 {
		return err
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return &writeStalledError{p.writeIdle}
	}
	p.c.SetWriteDeadline(time.Time{})
	return err
}

// writerOnly hides every method but Write, so io.Copy cannot loop back into ReadFrom.
type writerOnly struct{ io.Writer }
