package logging

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// viaSlog is what slog's own handler writes for the record.
func viaSlog(t testing.TB, json bool, tm time.Time, level slog.Level, msg string, attrs []slog.Attr) string {
	t.Helper()
	var out bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	var h slog.Handler = slog.NewTextHandler(&out, opts)
	if json {
		h = slog.NewJSONHandler(&out, opts)
	}
	r := slog.NewRecord(tm, level, msg, 0)
	r.AddAttrs(attrs...)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// viaPlain is what LogPlain writes, and whether it took the record.
func viaPlain(t testing.TB, json bool, tm time.Time, level slog.Level, msg string, attrs []slog.Attr) (string, bool) {
	t.Helper()
	var out bytes.Buffer
	b := NewBuffer(&out)
	h := New(slog.LevelDebug, json, b).Handler().(*Handler)
	ok := h.LogPlain(tm, level, msg, attrs)
	b.Close()
	return out.String(), ok
}

func accessAttrs(path, remote, id string, status int, sent int64) []slog.Attr {
	return []slog.Attr{
		slog.String("method", "GET"), slog.String("path", path), slog.Int("status", status),
		slog.Int64("bytes", sent), slog.Int64("dur_ms", 0), slog.String("remote", remote),
		slog.String("req_id", id),
	}
}

func TestLogPlainWritesWhatSlogWrites(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	times := []time.Time{
		time.Date(2026, 12, 2, 4, 13, 19, 123456789, time.UTC),
		time.Date(2026, 12, 2, 4, 13, 19, 0, time.UTC),       // no fraction: slog still writes .000
		time.Date(2026, 12, 2, 4, 13, 19, 100000000, berlin), // trailing zeros, a zone offset
		time.Date(1999, 1, 1, 0, 0, 0, 999999999, time.UTC),
		time.Now(), // with a monotonic reading, which neither writes
	}
	records := [][]slog.Attr{
		accessAttrs("/0c0xhnkvhvrhq4n8wbsm9zqsxkf4mk4k.narinfo", "127.0.0.1:51234", "5f7be02055b21162", 404, 10),
		accessAttrs("/nar/1b9p07z77phvv2hf6gm9f28syp39f1ag.nar.zst", "[::1]:80", "a.b:c-d_e", 200, 1<<40),
		append(accessAttrs("/x", "r", "i", 500, -1), slog.Int64("req_bytes", 7)),
		nil,
	}
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2}
	for _, json := range []bool{false, true} {
		for _, tm := range times {
			for _, lv := range levels {
				for _, attrs := range records {
					got, ok := viaPlain(t, json, tm, lv, "request", attrs)
					if !ok {
						t.Fatalf("json=%v: LogPlain refused a plain access record %v", json, attrs)
					}
					if want := viaSlog(t, json, tm, lv, "request", attrs); got != want {
						t.Fatalf("json=%v:\n got %q\nwant %q", json, got, want)
					}
				}
			}
		}
	}
}

func TestLogPlainRefusesWhatNeedsQuoting(t *testing.T) {
	tm := time.Date(2026, 12, 2, 4, 13, 19, 0, time.UTC)
	for _, v := range []string{"", "a b", `a"b`, `a\b`, "a=b", "<script>", "a&b", "tab\there", "new\nline", "é", "\x7f"} {
		for _, json := range []bool{false, true} {
			if out, ok := viaPlain(t, json, tm, slog.LevelInfo, "request", []slog.Attr{slog.String("err", v)}); ok || out != "" {
				t.Errorf("json=%v: LogPlain took value %q and wrote %q", json, v, out)
			}
			if _, ok := viaPlain(t, json, tm, slog.LevelInfo, v, nil); ok {
				t.Errorf("json=%v: LogPlain took message %q", json, v)
			}
			if _, ok := viaPlain(t, json, tm, slog.LevelInfo, "m", []slog.Attr{slog.Int("k"+v, 1)}); ok && v != "" {
				t.Errorf("json=%v: LogPlain took key %q", json, "k"+v)
			}
		}
	}
	for _, a := range []slog.Attr{slog.Bool("b", true), slog.Float64("f", 1.5), slog.Duration("d", time.Second), slog.Group("g", "k", "v"), slog.Any("e", context.Canceled)} {
		if _, ok := viaPlain(t, false, tm, slog.LevelInfo, "m", []slog.Attr{a}); ok {
			t.Errorf("LogPlain took %v of kind %v", a, a.Value.Kind())
		}
	}
}

// A logger with attributes or a group would write them on every line: LogPlain must leave such
// records to slog.
func TestLogPlainOnlyOnThePlainHandler(t *testing.T) {
	var out bytes.Buffer
	b := NewBuffer(&out)
	log := New(slog.LevelInfo, false, b)
	tm := time.Date(2026, 12, 2, 4, 13, 19, 0, time.UTC)
	for name, l := range map[string]*slog.Logger{"With": log.With("component", "x"), "WithGroup": log.WithGroup("g")} {
		if l.Handler().(*Handler).LogPlain(tm, slog.LevelInfo, "request", nil) {
			t.Errorf("LogPlain on a handler after %s took the record", name)
		}
	}
	if log.With().Handler().(*Handler).LogPlain(tm, slog.LevelInfo, "request", nil) != true {
		t.Error("LogPlain refused after With() with no attributes")
	}
	b.Close()
}

// Lines wait in the buffer, but a warning goes out at once with everything before it, through
// either way of logging; the rest goes out on the timer.
func TestBufferFlushesOnWarn(t *testing.T) {
	var out syncBuffer
	b := newBuffer(&out, time.Hour) // no timed flush while the test looks
	log := New(slog.LevelInfo, false, b)
	h := log.Handler().(*Handler)
	tm := time.Now()
	h.LogPlain(tm, slog.LevelInfo, "first", nil)
	log.Info("second")
	if s := out.String(); s != "" {
		t.Fatalf("info lines were written at once: %q", s)
	}
	h.LogPlain(tm, slog.LevelWarn, "third", nil)
	if s := out.String(); !strings.Contains(s, "msg=first") || !strings.Contains(s, "msg=second") || !strings.Contains(s, "msg=third") {
		t.Fatalf("after a plain warning the output is %q", s)
	}
	log.Info("fourth")
	log.Error("fifth")
	if s := out.String(); !strings.Contains(s, "msg=fifth") || strings.Index(s, "fourth") > strings.Index(s, "fifth") {
		t.Fatalf("after an error the output is %q", s)
	}
	log.Info("sixth")
	b.Close()
	if s := out.String(); !strings.HasSuffix(s, "msg=sixth\n") {
		t.Fatalf("Close did not write out the last line: %q", s)
	}

	var timed syncBuffer
	b = newBuffer(&timed, 10*time.Millisecond)
	defer b.Close()
	New(slog.LevelInfo, false, b).Info("seventh")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(timed.String(), "msg=seventh") {
		if time.Now().After(deadline) {
			t.Fatalf("an info line was not flushed by the timer within 5 s: %q", timed.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Long runs of lines: the buffer flushes to make room and loses nothing.
func TestLogPlainManyLines(t *testing.T) {
	var out bytes.Buffer
	b := NewBuffer(&out)
	h := New(slog.LevelInfo, true, b).Handler().(*Handler)
	tm := time.Date(2026, 12, 2, 4, 13, 19, 0, time.UTC)
	attrs := accessAttrs(strings.Repeat("p", 3000), "r", "i", 200, 1)
	for i := 0; i < 1000; i++ {
		if !h.LogPlain(tm, slog.LevelInfo, "request", attrs) {
			t.Fatal("LogPlain refused")
		}
	}
	b.Close()
	want := viaSlog(t, true, tm, slog.LevelInfo, "request", attrs)
	if got := out.String(); got != strings.Repeat(want, 1000) {
		t.Fatalf("wrote %d bytes, want %d copies of a %d-byte line", len(got), 1000, len(want))
	}
}

func FuzzLogPlain(f *testing.F) {
	f.Add(false, int64(1764648799123456789), int8(0), "request", "path", "/abc.narinfo", int64(404))
	f.Add(true, int64(0), int8(4), "m", "k", "v w", int64(-1))
	f.Add(false, int64(-62135596800000000), int8(-4), "m", "k", "=", int64(1))
	f.Fuzz(func(t *testing.T, json bool, ns int64, level int8, msg, key, val string, n int64) {
		tm := time.Unix(0, ns).UTC()
		if y := tm.Year(); y < 0 || y >= 10000 {
			return // slog's JSON handler writes an error for these instead
		}
		attrs := []slog.Attr{slog.String(key, val), slog.Int64("n", n)}
		got, ok := viaPlain(t, json, tm, slog.Level(level), msg, attrs)
		if !ok {
			if got != "" {
				t.Fatalf("LogPlain refused but wrote %q", got)
			}
			return
		}
		if want := viaSlog(t, json, tm, slog.Level(level), msg, attrs); got != want {
			t.Fatalf("json=%v:\n got %q\nwant %q", json, got, want)
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
