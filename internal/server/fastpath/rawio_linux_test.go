package fastpath

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestSockIOIsRaw(t *testing.T) {
	s, _ := tcpPair(t)
	if _, ok := newSockIO(s, 0).(*sockIO); !ok {
		t.Fatalf("newSockIO(%T) did not use raw socket I/O", s)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got, ok := newSockIO(p1, 0).(*plainIO); !ok || got.c != p1 {
		t.Fatalf("newSockIO(net.Pipe) = %T, want plainIO over the conn itself", got)
	}
}

// A write far larger than the socket buffers must wait in the poller (EAGAIN) and still deliver
// every byte, in order; reads must see them all and then EOF.
func TestSockIOBigWriteAndEOF(t *testing.T) {
	s, c := tcpPair(t)
	sio := newSockIO(s, 0)
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		n, err := sio.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		s.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	cio := newSockIO(c, 0)
	var got bytes.Buffer
	buf := make([]byte, 1000) // small reads, slowly at first: the writer must block
	time.Sleep(50 * time.Millisecond)
	for {
		n, err := cio.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got.Len(), err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("read %d bytes, not the %d written", got.Len(), len(want))
	}
}

func TestSockIOReadDeadline(t *testing.T) {
	s, _ := tcpPair(t)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	n, err := newSockIO(s, 0).Read(make([]byte, 10))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %d, %v; want 0 and a deadline error", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a net.Error timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Read returned after %v", d)
	}
}

// A peer that has reset the connection is an error from Write, never a SIGPIPE.
func TestSockIOWriteToGonePeer(t *testing.T) {
	s, c := tcpPair(t)
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // RST
	sio := newSockIO(s, 0)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = sio.Write(make([]byte, 64<<10))
		time.Sleep(time.Millisecond)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write to a reset peer: %v, want a *net.OpError for write", err)
	}
	if _, err := sio.Read(make([]byte, 10)); err == nil {
		t.Fatal("read from a reset peer succeeded")
	}
}

func TestSockIOClosed(t *testing.T) {
	s, _ := tcpPair(t)
	sio := newSockIO(s, 0)
	s.Close()
	if _, err := sio.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a closed conn: %v, want net.ErrClosed", err)
	}
	if _, err := sio.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to a closed conn: %v, want net.ErrClosed", err)
	}
}
