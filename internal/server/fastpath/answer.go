package fastpath

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// A Handler answers the requests the fast path has read.
type Handler interface {
	// Answer fills a with the answer to req and reports true, or reports false, having done
	// nothing a client could see, and net/http answers req (and the rest of the connection).
	// ctx ends only when Shutdown gives up waiting for requests in flight: a connection is not
	// watched while its request is answered.
	Answer(ctx context.Context, req *Request, a *Answer) bool
	// Sent is called once a has been sent: sent bytes of its body went out, from firstByte on;
	// err is why the answer is short (the connection is then closed). The handler records the
	// request here and lets go of what a holds.
	Sent(req *Request, a *Answer, firstByte time.Time, sent int64, err error)
}

// An Answer is what a Handler answers, for the connection to send as it is. There is one per
// connection, used for each of its answers in turn.
type Answer struct {
	// Head is the status line and header lines, each ending in CRLF, up to but not including
	// Connection and Date, which the connection adds, and the blank line. Append to Head[:0]:
	// its array is kept for the next answer.
	Head []byte
	// The body, which a HEAD does not get: Body, or else Size bytes of File from its current
	// offset (sendfile(2)).
	Body []byte
	File *os.File
	Size int64
	// Conn is the Handler's, for state it keeps per connection; the connection never reads it.
	Conn any
}

// Options are the fast path's own settings.
type Options struct {
	// WriteIdleTimeout drops a connection whose client takes no bytes of an answer for this
	// long (0: never), the fast path's answers and net/http's.
	WriteIdleTimeout time.Duration
	// Log gets what goes wrong with the listener (nil: slog.Default()).
	Log *slog.Logger
}

// send writes fc.ans, the answer to req, with the connection's Connection and Date lines, and
// tells the Handler. A failure once the answer has begun closes the connection (req.Close),
// as net/http does: only a closed connection tells the client that its answer is short.
func (f *Server) send(fc *conn, req *Request) {
	a := &fc.ans
	a.Head = f.appendTail(a.Head, req.Close, req.Start)
	f.answered.Add(1) // before a byte goes out: a client that has the answer sees it counted
	firstByte := time.Now()
	var sent int64
	var err error
	switch {
	case a.File == nil:
		fc.bw.Write(a.Head) // sent with whatever follows
		if !req.Head && len(a.Body) > 0 {
			fc.bw.Write(a.Body)
			sent = int64(len(a.Body))
		}
	case req.Head:
		fc.bw.Write(a.Head)
	case fc.bw.Buffered() > 0 || a.Size == 0: // answers to pipelined requests go first;
		// an empty file has no body to send the head with (MSG_MORE would hold it back ~200 ms)
		fc.bw.Write(a.Head)
		err = fc.bw.Flush()
	default:
		err = writeMore(fc.sock, a.Head)
	}
	if err == nil && a.File != nil && !req.Head {
		// The kernel copies it (sendfile), and a client that stops reading for
		// WriteIdleTimeout fails it.
		sent, err = fc.sock.SendFile(a.File, a.Size)
	}
	if err != nil {
		req.Close = true
	}
	f.h.Sent(req, a, firstByte, sent, err)
	a.Body, a.File, a.Size = nil, nil, 0
}

// appendTail ends the header block as net/http does: Connection when closing, then Date.
func (f *Server) appendTail(b []byte, closing bool, now time.Time) []byte {
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, f.dateLine(now)...)
	return append(b, "\r\n"...)
}

// dateLine is "Date: <IMF-fixdate>\r\n" for now, formatted at most once a second.
type dateLine struct {
	sec  int64
	line []byte
}

func (f *Server) dateLine(now time.Time) []byte {
	sec := now.Unix()
	if d := f.date.Load(); d != nil && d.sec == sec {
		return d.line
	}
	line := now.UTC().AppendFormat([]byte("Date: "), http.TimeFormat)
	line = append(line, "\r\n"...)
	f.date.Store(&dateLine{sec: sec, line: line})
	return line
}
