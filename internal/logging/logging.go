// Package logging is the process's log output: slog's text or JSON handler writing through a
// buffer that a busy cache's one line per request needs, and a fast way to write the simplest
// records (the access log's) with exactly the bytes slog would. It knows nothing of HTTP.
package logging

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Buffer batches log output: a write(2) per line cost a fifth of a narinfo request's CPU. Lines
// wait at most FlushEvery; a record at warn level or above is written out at once (with
// everything before it), so what matters most is on disk when the process dies.
type Buffer struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// FlushEvery is how long a line may wait in a Buffer.
const FlushEvery = 100 * time.Millisecond

// NewBuffer returns a Buffer in front of w, flushed every FlushEvery until Close.
func NewBuffer(w io.Writer) *Buffer { return newBuffer(w, FlushEvery) }

func newBuffer(w io.Writer, every time.Duration) *Buffer {
	b := &Buffer{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.Flush()
			}
		}
	}()
	return b
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes out what is buffered.
func (b *Buffer) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.w.Flush()
}

// Close stops the flusher and writes out the rest.
func (b *Buffer) Close() {
	close(b.stop)
	<-b.done
	b.Flush()
}

// New returns a logger at level writing text or (json) JSON lines to b.
func New(level slog.Level, json bool, b *Buffer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if json {
		h = slog.NewJSONHandler(b, opts)
	} else {
		h = slog.NewTextHandler(b, opts)
	}
	return slog.New(&Handler{Handler: h, buf: b, json: json, plain: true})
}

// Handler is slog's text or JSON handler on a Buffer that flushes the buffer after every record
// at warn or above, and can write plain records itself (LogPlain).
type Handler struct {
	slog.Handler
	buf   *Buffer
	json  bool
	plain bool // no attributes or groups were added: LogPlain writes what Handle would
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.buf.Flush()
	}
	return err
}

func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return &Handler{Handler: h.Handler.WithAttrs(attrs), buf: h.buf, json: h.json}
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{Handler: h.Handler.WithGroup(name), buf: h.buf, json: h.json}
}

// LogPlain writes the record (t, level, msg, attrs) exactly as Handle would, without building a
// slog.Record and without slog's general formatting, which cost a narinfo answer a tenth of its
// CPU. It takes only what needs neither quoting nor escaping in either format: attributes of
// kind String or Int64, and keys and strings of printable ASCII other than space, '"', '\\',
// '=', '<', '>' and '&'. For anything else, and on a handler with added attributes or groups, it
// writes nothing and reports false; the caller then logs through slog. The caller checks
// Enabled first, as for Handle.
func (h *Handler) LogPlain(t time.Time, level slog.Level, msg string, attrs []slog.Attr) bool {
	lv := level.String()
	if !h.plain || !plain(msg) || !plain(lv) {
		return false
	}
	for _, a := range attrs {
		if !plain(a.Key) {
			return false
		}
		switch a.Value.Kind() {
		case slog.KindInt64:
		case slog.KindString:
			if !plain(a.Value.String()) {
				return false
			}
		default:
			return false
		}
	}
	b := h.buf
	b.mu.Lock()
	if b.w.Available() < 1024 {
		b.w.Flush()
	}
	line := b.w.AvailableBuffer() // formatted in place: no copy, no allocation
	if h.json {
		line = append(line, `{"time":"`...)
		line = t.AppendFormat(line, time.RFC3339Nano)
		line = append(line, `","level":"`...)
		line = append(line, lv...)
		line = append(line, `","msg":"`...)
		line = append(line, msg...)
		line = append(line, '"')
		for _, a := range attrs {
			line = append(line, `,"`...)
			line = append(line, a.Key...)
			line = append(line, `":`...)
			if a.Value.Kind() == slog.KindInt64 {
				line = strconv.AppendInt(line, a.Value.Int64(), 10)
			} else {
				line = append(line, '"')
				line = append(line, a.Value.String()...)
				line = append(line, '"')
			}
		}
		line = append(line, "}\n"...)
	} else {
		line = append(line, "time="...)
		line = appendRFC3339Millis(line, t)
		line = append(line, " level="...)
		line = append(line, lv...)
		line = append(line, " msg="...)
		line = append(line, msg...)
		for _, a := range attrs {
			line = append(line, ' ')
			line = append(line, a.Key...)
			line = append(line, '=')
			if a.Value.Kind() == slog.KindInt64 {
				line = strconv.AppendInt(line, a.Value.Int64(), 10)
			} else {
				line = append(line, a.Value.String()...)
			}
		}
		line = append(line, '\n')
	}
	b.w.Write(line)
	b.mu.Unlock()
	if level >= slog.LevelWarn {
		b.Flush()
	}
	return true
}

// plain reports whether s is written as is, unquoted and unescaped, by both slog handlers.
func plain(s string) bool {
	if s == "" {
		return false // the text handler writes ""
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f:
			return false
		case c == '"' || c == '\\' || c == '=' || c == '<' || c == '>' || c == '&':
			return false
		}
	}
	return true
}

// appendRFC3339Millis formats t as the text handler does: RFC 3339 with exactly three
// fractional digits, truncated.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	// RFC3339Nano drops trailing zeros: add a tenth of a millisecond so that four digits remain,
	// then drop the fourth.
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}
