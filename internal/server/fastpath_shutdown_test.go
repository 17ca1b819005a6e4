package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/server"
)

// lateListener hands out one connection only once it is closed: an Accept that completed just as
// Shutdown closed the listener, an interleaving a real listener gives only by chance (hence a
// fake).
type lateListener struct {
	closed   chan struct{}
	once     sync.Once
	conn     net.Conn
	accepted bool
}

func (l *lateListener) Accept() (net.Conn, error) {
	<-l.closed
	if !l.accepted {
		l.accepted = true
		return l.conn, nil
	}
	return nil, net.ErrClosed
}

func (l *lateListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *lateListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestFastPathConnectionAcceptedDuringShutdown: a connection accepted while Shutdown runs is
// closed, not served, and Serve returns http.ErrServerClosed. Serve counts a connection only
// under the lock Shutdown takes after it began closing, so the count never goes up while
// Shutdown waits on it. (The unlocked count this replaces behaved the same here: the race
// detector reports an Add racing a Wait only in interleavings this test cannot force, so the
// test guards the behaviour, not the race.)
func TestFastPathConnectionAcceptedDuringShutdown(t *testing.T) {
	tc := newTestCache(t)
	client, srv := net.Pipe()
	ln := &lateListener{closed: make(chan struct{}), conn: srv}
	hs := &http.Server{Handler: tc.Handler, ReadHeaderTimeout: time.Second, IdleTimeout: time.Minute}
	fs := server.NewFastServer(tc.Handler, hs)
	done := make(chan error, 1)
	go func() { done <- fs.Serve(ln) }()
	time.Sleep(10 * time.Millisecond) // Serve is in Accept
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fs.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	// Whatever the connection asks is not answered: it is closed.
	go client.Write([]byte("GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n"))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 100)); err != io.EOF && !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("the connection accepted during Shutdown: read %d bytes, %v; want it closed", n, err)
	}
}
