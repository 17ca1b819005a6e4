package server_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/server"
)

// Connection limits under hostile clients: how long the fast path and net/http behind it keep a
// connection that sends too little or reads nothing. Timeouts are short here; the server's are
// configured the same way (http.Server's ReadHeaderTimeout and IdleTimeout, server.Config's
// WriteIdleTimeout).

// serveTimeouts serves tc through the fast path with the given header and idle timeouts and
// returns its address.
func serveTimeouts(t *testing.T, tc *testCache, header, idle time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: tc.Handler, ReadHeaderTimeout: header, IdleTimeout: idle}
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	fs := server.NewFastServer(tc.Handler, hs)
	go fs.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fs.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// openFor dials addr, runs send (which may write, pause and write again), reads whatever comes
// until the server closes the connection, and returns when the dial began and when the
// connection was closed.
func openFor(t *testing.T, addr string, send func(c net.Conn)) (opened, closed time.Time) {
	t.Helper()
	opened = time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan time.Time, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, c)
		done <- time.Now()
	}()
	if send != nil {
		send(c)
	}
	return opened, <-done
}

// trickle writes s one byte every gap until the server stops taking them or until is over.
func trickle(c net.Conn, s string, gap time.Duration) {
	for i := 0; i < len(s); i++ {
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
		time.Sleep(gap)
	}
}

// TestHeaderTimeoutFromAccept: the first request's head must be complete ReadHeaderTimeout after
// the connection was accepted, whether the fast path reads it or hands it to net/http halfway
// (a line ending in a bare LF): a connection that sends nothing is not kept for IdleTimeout, a
// head that trickles in after a pause gets no fresh ReadHeaderTimeout, and net/http does not
// restart the clock.
func TestHeaderTimeoutFromAccept(t *testing.T) {
	tc := newTestCache(t)
	const header, idle = time.Second, 10 * time.Second
	addr := serveTimeouts(t, tc, header, idle)
	miss := "/" + storeHash("timeouts") + ".narinfo"
	long := "X-Pad: " + strings.Repeat("a", 60) + "\r\n"
	get := "GET " + miss + " HTTP/1.1\r\nHost: cache\r\n\r\n"
	cases := []struct {
		name string
		send func(c net.Conn)
	}{
		{"silent", nil},
		{"pause then trickle", func(c net.Conn) {
			time.Sleep(header * 7 / 10)
			trickle(c, "GET "+miss+" HTTP/1.1\r\n"+long, 20*time.Millisecond)
		}},
		{"trickle then bare LF", func(c net.Conn) {
			io.WriteString(c, "GET "+miss+" HTTP/1.1\r\n")
			trickle(c, long[:35], 20*time.Millisecond) // 0.7 s
			io.WriteString(c, "\nX-A: b\n")            // hands the head to net/http
			trickle(c, long+long, 20*time.Millisecond)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opened, closed := openFor(t, addr, c.send)
			if d := closed.Sub(opened); d < header*8/10 || d > header*3/2 {
				t.Errorf("closed %v after the connection was opened, want about ReadHeaderTimeout (%v)", d, header)
			}
		})
	}
	// On a connection the fast path has answered on, the clock starts with the first byte of the
	// next head (as net/http's does), and a hand-off keeps it.
	t.Run("after an answer, trickle then bare LF", func(t *testing.T) {
		var began time.Time
		_, closed := openFor(t, addr, func(c net.Conn) {
			io.WriteString(c, get)
			time.Sleep(header / 2) // the answer comes; then idle, well below IdleTimeout
			began = time.Now()
			io.WriteString(c, "GET "+miss+" HTTP/1.1\r\n")
			trickle(c, long[:35], 20*time.Millisecond)
			io.WriteString(c, "\nX-A: b\n")
			trickle(c, long+long, 20*time.Millisecond)
		})
		if d := closed.Sub(began); d < header*8/10 || d > header*3/2 {
			t.Errorf("closed %v after the second head began, want about ReadHeaderTimeout (%v)", d, header)
		}
	})
}

// TestH2CPrefaceOnlyFirst: h2c is for the first bytes of a connection. An HTTP/2 preface after
// an answer is what net/http alone makes of it (an HTTP/1.1 request it answers and then closes
// the connection), not a switch to HTTP/2.
func TestH2CPrefaceOnlyFirst(t *testing.T) {
	tc := newTestCache(t)
	fast := serveTimeouts(t, tc, 5*time.Second, 10*time.Second)
	// net/http alone, with the same protocols.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: tc.Handler, ReadHeaderTimeout: 5 * time.Second}
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	miss := "/" + storeHash("h2c") + ".narinfo"
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	settings := "\x00\x00\x00\x04\x00\x00\x00\x00\x00" // an empty SETTINGS frame
	raw := "GET " + miss + " HTTP/1.1\r\nHost: cache\r\n\r\n" + preface + settings
	answers := func(addr string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, raw)
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%s: the connection was not closed: %v (read %q)", addr, err, b)
		}
		// Status lines only: the rest differs by date and request id.
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "HTTP/") {
				lines = append(lines, l)
			}
		}
		if !strings.HasSuffix(string(b), "\n") {
			lines = append(lines, "(non-HTTP/1 bytes)")
		}
		return strings.Join(lines, "|")
	}
	want, got := answers(ln.Addr().String()), answers(fast)
	if got != want {
		t.Errorf("fast path: %s\nnet/http alone: %s", got, want)
	}
	// h2c as the first bytes still works.
	c, err := net.Dial("tcp", fast)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, preface+settings)
	frame := make([]byte, 9)
	if _, err := io.ReadFull(c, frame); err != nil || frame[3] != 0x4 {
		t.Fatalf("h2c preface as the first bytes: frame header %x, %v; want a SETTINGS frame", frame, err)
	}
}

// bigFile puts size random bytes in the disk backend under a NAR name and returns its path. The
// fast path and the router serve any file there, narinfo or not.
func bigFile(t *testing.T, tc *testCache, seed byte, size int) (string, []byte) {
	t.Helper()
	name := "nar/1" + strings.Repeat(string("0123456789abcdfg"[seed%16]), 51) + ".nar"
	b := make([]byte, size)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	if err := os.MkdirAll(filepath.Join(tc.Root, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tc.Root, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return "/" + name, b
}

// dialSmall connects with a small receive buffer, so that a client that does not read fills
// the server's send buffer soon.
func dialSmall(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		return nil
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestWriteIdleTimeout: a client that reads nothing of an answer loses its connection after
// WriteIdleTimeout, on the fast path (a NAR with sendfile, pipelined narinfo answers) and
// through net/http (a NAR with sendfile); one that reads slowly, for far longer than the
// timeout in all, gets every byte.
func TestWriteIdleTimeout(t *testing.T) {
	const idle = time.Second
	tc := newTestCacheConfig(t, func(c *server.Config) { c.WriteIdleTimeout = idle })
	nar, content := bigFile(t, tc, 1, 16<<20)
	fast := serveTimeouts(t, tc, 5*time.Second, 10*time.Second)
	u := newUpload(t, "pipelined-unread", "zstd")
	u.store(t, tc)
	for _, path := range []struct{ name, addr string }{{"fast path", fast}, {"net/http", tc.Addr}} {
		t.Run(path.name+", reads nothing", func(t *testing.T) {
			c := dialSmall(t, path.addr)
			io.WriteString(c, "GET "+nar+" HTTP/1.1\r\nHost: cache\r\n\r\n")
			time.Sleep(3 * idle)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if isTimeout(err) || n > int64(len(content)) {
				t.Fatalf("read %d bytes of a %d-byte NAR, then %v: the server kept the connection of a client that read nothing for %v", n, len(content), err, 3*idle)
			}
		})
		t.Run(path.name+", reads slowly", func(t *testing.T) {
			c := dialSmall(t, path.addr)
			io.WriteString(c, "GET "+nar+" HTTP/1.1\r\nHost: cache\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var got bytes.Buffer
			buf := make([]byte, 256<<10)
			for {
				time.Sleep(idle / 20) // 256 KiB every 50 ms: about 5 MB/s
				n, err := io.ReadFull(resp.Body, buf)
				got.Write(buf[:n])
				if err != nil {
					break
				}
			}
			if !bytes.Equal(got.Bytes(), content) {
				t.Fatalf("a slow reader got %d of %d bytes in %v", got.Len(), len(content), time.Since(start))
			}
			if d := time.Since(start); d < 2*idle {
				t.Errorf("the download took %v, not long enough to show that a slow reader outlasts the timeout (%v)", d, idle)
			}
		})
	}
	t.Run("fast path, pipelined answers unread", func(t *testing.T) {
		c := dialSmall(t, fast)
		req := "GET " + u.NarInfoPath() + " HTTP/1.1\r\nHost: cache\r\n\r\n"
		const n = 40000 // about 20 MB of answers
		go func() {
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(c, strings.Repeat(req, n))
		}()
		time.Sleep(3 * idle)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		answers := 0
		for ; answers < n; answers++ {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("after %d answers: %v: the server kept the connection", answers, err)
				}
				break
			}
			io.Copy(io.Discard, resp.Body)
		}
		if answers == n {
			t.Fatalf("all %d answers came: the server kept the connection of a client that read nothing for %v", n, 3*idle)
		}
	})
}
