package retry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
	"github.com/cached-dev/cached/internal/backend/disk"
)

// errTransient stands for a 503 SlowDown or a reset connection.
var errTransient = errors.New("503 SlowDown")

func isTransient(err error) bool { return errors.Is(err, errTransient) }

// faulty is a fake backend that fails on demand in front of a real disk backend. It is a fake
// because a real S3 server cannot be told to throttle or drop a connection on demand; the
// outage test below uses a real one for what it can show.
type faulty struct {
	backend.Backend
	mu    sync.Mutex
	fails map[string][]error // per operation, the errors its next calls return
	calls map[string]int
	// saveReads: a failing Save first reads this many bytes of its input, as an upload that
	// breaks mid-stream does.
	saveReads int
}

func newFaulty(t *testing.T) *faulty {
	d, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &faulty{Backend: d, fails: map[string][]error{}, calls: map[string]int{}}
}

func (f *faulty) failNext(op string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails[op] = append(f.fails[op], errs...)
}

func (f *faulty) fault(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if errs := f.fails[op]; len(errs) > 0 {
		f.fails[op] = errs[1:]
		return errs[0]
	}
	return nil
}

func (f *faulty) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *faulty) Save(ctx context.Context, name string, rd io.Reader) error {
	if err := f.fault("save"); err != nil {
		io.CopyN(io.Discard, rd, int64(f.saveReads))
		return err
	}
	return f.Backend.Save(ctx, name, rd)
}

func (f *faulty) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	if err := f.fault("stat"); err != nil {
		return backend.FileInfo{}, err
	}
	return f.Backend.Stat(ctx, name)
}

func (f *faulty) Open(ctx context.Context, name string) (backend.Object, error) {
	if err := f.fault("open"); err != nil {
		return nil, err
	}
	obj, err := f.Backend.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &faultyObject{ReadSeekCloser: obj, obj: obj, f: f}, nil
}

func (f *faulty) Remove(ctx context.Context, name string) error {
	if err := f.fault("remove"); err != nil {
		if err == errLostAnswer {
			f.Backend.Remove(ctx, name)
			return errTransient
		}
		return err
	}
	return f.Backend.Remove(ctx, name)
}

// errLostAnswer makes Remove delete the object and then fail transiently, as a DELETE whose
// response was lost does.
var errLostAnswer = errors.New("lost answer")

func (f *faulty) Move(ctx context.Context, from, to string) error {
	if err := f.fault("move"); err != nil {
		if err == errLostAnswer {
			f.Backend.(backend.Mover).Move(ctx, from, to)
			return errTransient
		}
		return err
	}
	return f.Backend.(backend.Mover).Move(ctx, from, to)
}

func (f *faulty) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	if err := f.fault("list"); err != nil {
		return err
	}
	return f.Backend.List(ctx, prefix, fn)
}

// faultyObject hides the disk object's *os.File (as an S3 object has none) and fails reads on
// demand.
type faultyObject struct {
	io.ReadSeekCloser
	obj backend.Object
	f   *faulty
}

func (o *faultyObject) Info() backend.FileInfo { return o.obj.Info() }

func (o *faultyObject) Read(p []byte) (int, error) {
	if err := o.f.fault("read"); err != nil {
		// Deliver a few bytes with the error and lose the position, as a cut GET does.
		n, _ := o.ReadSeekCloser.Read(p[:min(len(p), 3)])
		o.ReadSeekCloser.Seek(1000, io.SeekCurrent)
		return n, err
	}
	return o.ReadSeekCloser.Read(p)
}

func quick(f backend.Backend) *Backend {
	return New(f, Config{IsTransient: isTransient, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, quick(newFaulty(t)))
}

func TestTransientRetriedThenSucceeds(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	r := quick(f)
	f.failNext("save", errTransient, errTransient)
	if err := r.Save(ctx, "a.narinfo", strings.NewReader("hello")); err != nil {
		t.Fatalf("Save: %v", err)
	}
	f.failNext("stat", errTransient, errTransient)
	if fi, err := r.Stat(ctx, "a.narinfo"); err != nil || fi.Size != 5 {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	f.failNext("open", errTransient)
	f.failNext("read", errTransient, errTransient)
	obj, err := r.Open(ctx, "a.narinfo")
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || string(data) != "hello" {
		t.Fatalf("read back %q, %v", data, err)
	}
	f.failNext("list", errTransient)
	n := 0
	if err := r.List(ctx, "", func(backend.FileInfo) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("List: %d objects, %v", n, err)
	}
	f.failNext("remove", errTransient)
	if err := r.Remove(ctx, "a.narinfo"); err != nil {
		t.Fatal(err)
	}
	for op, want := range map[string]int{"save": 3, "stat": 3, "open": 2, "list": 2, "remove": 2} {
		if got := f.Calls(op); got != want {
			t.Errorf("%s called %d times, want %d", op, got, want)
		}
	}
}

func TestNotExistNotRetried(t *testing.T) {
	f := newFaulty(t)
	r := New(f, Config{IsTransient: func(error) bool { return true }, BaseDelay: time.Millisecond})
	if _, err := r.Stat(t.Context(), "missing"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Stat: %v", err)
	}
	if _, err := r.Open(t.Context(), "missing"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Open: %v", err)
	}
	if err := r.Remove(t.Context(), "missing"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("Remove: %v", err)
	}
	if f.Calls("stat") != 1 || f.Calls("open") != 1 || f.Calls("remove") != 1 {
		t.Errorf("ErrNotExist retried: %v", f.calls)
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestSaveWithFailingReaderNotRetried(t *testing.T) {
	f := newFaulty(t)
	r := quick(f)
	// Even when the reader's error looks transient (the uploading client's connection was
	// reset), the data is gone and another attempt cannot get it back.
	for _, rerr := range []error{errors.New("hash mismatch"), errTransient} {
		rd := io.MultiReader(strings.NewReader("some bytes"), failingReader{rerr})
		if err := r.Save(t.Context(), "nar/x.nar", rd); !errors.Is(err, rerr) {
			t.Fatalf("Save: %v, want %v", err, rerr)
		}
	}
	if n := f.Calls("save"); n != 2 {
		t.Errorf("Save called %d times for 2 failing readers", n)
	}
}

func TestSaveRetriedOnlyIfRewindable(t *testing.T) {
	f := newFaulty(t)
	f.saveReads = 4
	r := quick(f)
	ctx := t.Context()

	// A stream (an HTTP upload) the first attempt read from cannot be sent again.
	f.failNext("save", errTransient)
	stream := io.MultiReader(strings.NewReader("stream content"))
	if err := r.Save(ctx, "nar/stream.nar", stream); !errors.Is(err, errTransient) {
		t.Fatalf("Save of a consumed stream: %v, want the transient error", err)
	}
	if n := f.Calls("save"); n != 1 {
		t.Errorf("consumed stream saved %d times", n)
	}

	// A seekable reader is rewound to where it started and sent again whole.
	f.failNext("save", errTransient, errTransient)
	rd := bytes.NewReader([]byte("XXseekable content"))
	rd.Seek(2, io.SeekStart)
	if err := r.Save(ctx, "nar/seek.nar", rd); err != nil {
		t.Fatal(err)
	}
	obj, err := r.Open(ctx, "nar/seek.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if data, _ := io.ReadAll(obj); string(data) != "seekable content" {
		t.Fatalf("stored %q", data)
	}
}

func TestCancelStopsRetries(t *testing.T) {
	f := newFaulty(t)
	r := New(f, Config{IsTransient: isTransient, BaseDelay: time.Hour, MaxElapsed: 10 * time.Hour})
	f.failNext("stat", errTransient, errTransient, errTransient)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := r.Stat(ctx, "x")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errTransient) {
		t.Fatalf("Stat: %v, want the transient error and context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancellation took %v", d)
	}
	// An already cancelled ctx gets no second attempt.
	f.failNext("stat", errTransient, errTransient)
	r.Stat(ctx, "x")
	if n := f.Calls("stat"); n != 2 {
		t.Errorf("stat called %d times", n)
	}
}

func TestGivesUp(t *testing.T) {
	f := newFaulty(t)
	r := New(f, Config{IsTransient: isTransient, MaxAttempts: 3, BaseDelay: time.Millisecond})
	f.failNext("stat", errTransient, errTransient, errTransient, errTransient)
	_, err := r.Stat(t.Context(), "x")
	if !errors.Is(err, errTransient) || !strings.Contains(err.Error(), "3 attempts") {
		t.Fatalf("Stat: %v", err)
	}
	if n := f.Calls("stat"); n != 3 {
		t.Errorf("stat called %d times, want 3", n)
	}

	f = newFaulty(t)
	r = New(f, Config{IsTransient: isTransient, MaxAttempts: 100, BaseDelay: 20 * time.Millisecond, MaxElapsed: 100 * time.Millisecond})
	for range 100 {
		f.failNext("stat", errTransient)
	}
	start := time.Now()
	if _, err := r.Stat(t.Context(), "x"); !errors.Is(err, errTransient) {
		t.Fatalf("Stat: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("MaxElapsed 100ms took %v", d)
	}
}

func TestNonTransientNotRetried(t *testing.T) {
	f := newFaulty(t)
	r := quick(f)
	denied := errors.New("403 AccessDenied")
	f.failNext("stat", denied, errTransient)
	if _, err := r.Stat(t.Context(), "x"); err != denied {
		t.Fatalf("Stat: %v, want the error unchanged", err)
	}
	if n := f.Calls("stat"); n != 1 {
		t.Errorf("stat called %d times", n)
	}
}

func TestListNotRetriedAfterFn(t *testing.T) {
	f := newFaulty(t)
	r := quick(f)
	ctx := t.Context()
	for _, n := range []string{"a", "b", "c"} {
		r.Save(ctx, n, strings.NewReader(n))
	}
	// fn fails transiently itself: the listing has begun, so it is not repeated.
	calls := 0
	err := r.List(ctx, "", func(backend.FileInfo) error { calls++; return errTransient })
	if !errors.Is(err, errTransient) || calls != 1 || f.Calls("list") != 1 {
		t.Fatalf("List: %v after %d fn calls, %d listings", err, calls, f.Calls("list"))
	}
}

func TestRemoveLostAnswer(t *testing.T) {
	f := newFaulty(t)
	r := quick(f)
	r.Save(t.Context(), "a", strings.NewReader("a"))
	f.failNext("remove", errLostAnswer)
	if err := r.Remove(t.Context(), "a"); err != nil {
		t.Fatalf("Remove whose first answer was lost: %v", err)
	}
	if _, err := r.Stat(t.Context(), "a"); !errors.Is(err, backend.ErrNotExist) {
		t.Fatalf("object still there: %v", err)
	}
}

func TestReadRetriedAtPosition(t *testing.T) {
	f := newFaulty(t)
	r := quick(f)
	ctx := t.Context()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	r.Save(ctx, "nar/r.nar", bytes.NewReader(data))
	obj, err := r.Open(ctx, "nar/r.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	obj.Seek(5000, io.SeekStart)
	buf := make([]byte, 100)
	io.ReadFull(obj, buf[:10])
	f.failNext("read", errTransient, errTransient, errTransient)
	got, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(got, data[5010:]) {
		t.Fatalf("read after transient failures: %d bytes, %v", len(got), err)
	}
}

func TestMove(t *testing.T) {
	// Through the disk backend's Mover, and by copying for a backend without one.
	backendtest.RunMove(t, quick(newFaulty(t)))
	backendtest.RunMove(t, quick(&noMover{newFaulty(t)}))

	f := newFaulty(t)
	r := quick(f)
	ctx := t.Context()
	r.Save(ctx, "staging/a", strings.NewReader("a"))
	f.failNext("move", errTransient, errLostAnswer)
	if err := r.Move(ctx, "staging/a", "nar/a.nar"); err != nil {
		t.Fatalf("Move whose answer was lost: %v", err)
	}
	if fi, err := r.Stat(ctx, "nar/a.nar"); err != nil || fi.Size != 1 {
		t.Fatalf("moved object: %+v, %v", fi, err)
	}
}

// noMover hides the Move of the backend inside: its Move has another signature.
type noMover struct{ *faulty }

func (n *noMover) Move() {}

var _ = (*noMover).Move

func TestBackoff(t *testing.T) {
	r := New(newFaulty(t), Config{IsTransient: isTransient, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second})
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		for range 100 {
			if d := r.backoff(attempt); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestNewNeedsClassifier(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without IsTransient did not panic")
		}
	}()
	d, _ := disk.Open(t.TempDir())
	New(d, Config{})
}
