package s3

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/backendtest"
)

// saveRandom stores size pseudo-random bytes under name and returns them.
func saveRandom(t *testing.T, b *Backend, name string, size int, seed byte) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	if err := b.Save(t.Context(), name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return data
}

// TestReadRanges: every seek and read, in any order, returns the object's bytes at that offset
// (what http.ServeContent's Range requests rely on).
func TestReadRanges(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	const size = 3<<20 + 12345
	data := saveRandom(t, b, "nar/ranges.nar", size, 7)
	obj, err := b.Open(t.Context(), "nar/ranges.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		off := rng.Int64N(size + 10) // sometimes past the end
		n := 1 + rng.IntN(256<<10)
		if i%3 == 0 {
			n = 1 + rng.IntN(16) // tiny reads
		}
		if _, err := obj.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n)
		got, err := io.ReadFull(obj, buf)
		want := data[min(off, size):min(off+int64(n), size)]
		if !bytes.Equal(buf[:got], want) {
			t.Fatalf("read %d bytes at %d: got other bytes than stored (%d bytes, %v)", n, off, got, err)
		}
		switch {
		case len(want) == n && err != nil:
			t.Fatalf("read %d bytes at %d: %v", n, off, err)
		case len(want) < n && err != io.ErrUnexpectedEOF && err != io.EOF:
			t.Fatalf("read %d bytes at %d, past the end: %v, want EOF", n, off, err)
		}
	}
}

// TestReadCutMidway: the server going away in the middle of a read is an error (transient, so
// that the retry wrapper tries again), never an early io.EOF, and what was delivered before is
// the object's beginning.
func TestReadCutMidway(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	const size = 64 << 20 // more than loopback's socket buffers hold
	data := saveRandom(t, b, "nar/cut.nar", size, 8)
	obj, err := b.Open(t.Context(), "nar/cut.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(obj, head); err != nil {
		t.Fatal(err)
	}
	g.Stop()
	var got bytes.Buffer
	got.Write(head)
	_, err = io.Copy(&got, obj)
	if err == nil {
		t.Fatalf("read %d of %d bytes across a server crash without an error", got.Len(), size)
	}
	if !IsTransient(err) {
		t.Errorf("a crashed server: %v, want a transient error", err)
	}
	if !bytes.Equal(got.Bytes(), data[:got.Len()]) {
		t.Fatal("the bytes delivered before the crash are not the object's")
	}
	// Started again, the same reader continues where it was.
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("reading on after the restart: %v", err)
	}
	if !bytes.Equal(append(got.Bytes(), rest...), data) {
		t.Fatal("the object read across a restart differs from what was stored")
	}
}

// TestReadDeletedMidway: an object deleted while it is read gives its old bytes or an error
// saying it is gone, never other bytes and never a transient error (it will not come back).
func TestReadDeletedMidway(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	const size = 4 << 20
	data := saveRandom(t, b, "nar/gone.nar", size, 9)
	obj, err := b.Open(t.Context(), "nar/gone.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(obj, head); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(t.Context(), "nar/gone.nar"); err != nil {
		t.Fatal(err)
	}
	// A seek makes the next read a new GET, which finds no object.
	if _, err := obj.Seek(size/2, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	n, err := obj.Read(buf)
	if err == nil {
		if !bytes.Equal(buf[:n], data[size/2:size/2+n]) {
			t.Fatal("read other bytes than stored after the object was deleted")
		}
		t.Fatal("a new GET of a deleted object succeeded")
	}
	if !errors.Is(err, backend.ErrNotExist) || IsTransient(err) {
		t.Fatalf("read of a deleted object: %v, want backend.ErrNotExist, not transient", err)
	}
}

// TestReadReplacedAfterSeek: an object replaced between two GETs of one reader is an error,
// not the new bytes spliced onto the old (the GETs are conditional on the first ETag).
func TestReadReplacedAfterSeek(t *testing.T) {
	g := backendtest.StartVersityGW(t)
	b := open(t, testConfig(g))
	const size = 2 << 20
	saveRandom(t, b, "nar/swap.nar", size, 10)
	obj, err := b.Open(t.Context(), "nar/swap.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if _, err := io.ReadFull(obj, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	saveRandom(t, b, "nar/swap.nar", size, 11)
	obj.Seek(size/2, io.SeekStart)
	if n, err := obj.Read(make([]byte, 1000)); !errors.Is(err, errChanged) || IsTransient(err) {
		t.Fatalf("read of a replaced object after a seek: %d bytes, %v; want errChanged, not transient", n, err)
	}
}
