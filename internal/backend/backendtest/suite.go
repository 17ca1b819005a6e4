// Package backendtest is the conformance suite every backend must pass unchanged: a backend is
// done when Run is green against it.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
)

// Run exercises b, which must start empty.
func Run(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	t.Run("Missing", func(t *testing.T) {
		if _, err := b.Open(ctx, "missing/x"); !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("Open of a missing object: %v, want ErrNotExist", err)
		}
		if _, err := b.Stat(ctx, "missing.narinfo"); !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("Stat of a missing object: %v, want ErrNotExist", err)
		}
		if err := b.Remove(ctx, "missing.narinfo"); !errors.Is(err, backend.ErrNotExist) {
			t.Errorf("Remove of a missing object: %v, want ErrNotExist", err)
		}
	})
	t.Run("SaveOpenStatRemove", func(t *testing.T) {
		data := []byte("StorePath: /nix/store/x\n")
		if err := b.Save(ctx, "a.narinfo", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		fi, err := b.Stat(ctx, "a.narinfo")
		if err != nil || fi.Size != int64(len(data)) || fi.Name != "a.narinfo" {
			t.Fatalf("Stat = %+v, %v", fi, err)
		}
		if got := readAll(t, b, "a.narinfo"); !bytes.Equal(got, data) {
			t.Fatalf("read back %q", got)
		}
		if err := b.Remove(ctx, "a.narinfo"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Stat(ctx, "a.narinfo"); !errors.Is(err, backend.ErrNotExist) {
			t.Fatalf("Stat after Remove: %v", err)
		}
	})
	t.Run("EmptyObject", func(t *testing.T) {
		if err := b.Save(ctx, "log/empty", bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, b, "log/empty"); len(got) != 0 {
			t.Fatalf("empty object read back as %d bytes", len(got))
		}
		mustRemove(t, b, "log/empty")
	})
	t.Run("Overwrite", func(t *testing.T) {
		save(t, b, "nar/over.nar", []byte("first"))
		save(t, b, "nar/over.nar", []byte("second, longer"))
		if got := readAll(t, b, "nar/over.nar"); string(got) != "second, longer" {
			t.Fatalf("after overwrite: %q", got)
		}
		mustRemove(t, b, "nar/over.nar")
	})
	t.Run("FailedSaveLeavesNothing", func(t *testing.T) {
		boom := errors.New("verification refused the content")
		err := b.Save(ctx, "nar/fail.nar", io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), errReader{boom}))
		if !errors.Is(err, boom) {
			t.Fatalf("Save with a failing reader: %v, want the reader's error", err)
		}
		if _, err := b.Stat(ctx, "nar/fail.nar"); !errors.Is(err, backend.ErrNotExist) {
			t.Fatalf("a failed Save left an object: %v", err)
		}
		// A failed overwrite keeps the old object.
		save(t, b, "nar/keep.nar", []byte("old"))
		if err := b.Save(ctx, "nar/keep.nar", io.MultiReader(bytes.NewReader([]byte("new")), errReader{boom})); err == nil {
			t.Fatal("Save with a failing reader succeeded")
		}
		if got := readAll(t, b, "nar/keep.nar"); string(got) != "old" {
			t.Fatalf("a failed overwrite changed the object to %q", got)
		}
		mustRemove(t, b, "nar/keep.nar")
	})
	t.Run("CancelledSaveLeavesNothing", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		r := &cancelAfter{r: bytes.NewReader(make([]byte, 4<<20)), n: 1 << 20, cancel: cancel}
		if err := b.Save(cctx, "nar/cancel.nar", r); err == nil {
			t.Fatal("Save with a cancelled context succeeded")
		}
		if _, err := b.Stat(ctx, "nar/cancel.nar"); !errors.Is(err, backend.ErrNotExist) {
			t.Fatalf("a cancelled Save left an object: %v", err)
		}
	})
	t.Run("Ranges", func(t *testing.T) {
		data := make([]byte, 3<<20+17)
		rand.Read(data)
		save(t, b, "nar/range.nar", data)
		obj, err := b.Open(ctx, "nar/range.nar")
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		if obj.Info().Size != int64(len(data)) {
			t.Fatalf("Info().Size = %d", obj.Info().Size)
		}
		for _, off := range []int64{0, 1, 1 << 20, int64(len(data)) - 5} {
			if _, err := obj.Seek(off, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(obj, buf); err != nil {
				t.Fatalf("read at %d: %v", off, err)
			}
			if !bytes.Equal(buf, data[off:off+5]) {
				t.Fatalf("bytes at %d differ", off)
			}
		}
		if end, err := obj.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
			t.Fatalf("Seek end = %d, %v", end, err)
		}
		mustRemove(t, b, "nar/range.nar")
	})
	t.Run("List", func(t *testing.T) {
		names := []string{"aaa.narinfo", "bbb.narinfo", "nar/x1.nar.xz", "nar/x2.nar.zst", "log/foo.drv", "realisations/sha256:1!out.doi"}
		for i := 0; i < 30; i++ {
			names = append(names, fmt.Sprintf("nar/many-%03d.nar", i))
		}
		for _, n := range names {
			save(t, b, n, []byte(n))
		}
		all := list(t, b, "")
		for _, n := range names {
			if !contains(all, n) {
				t.Errorf("List(\"\") lacks %s", n)
			}
		}
		nars := list(t, b, "nar/")
		if len(nars) != 32 {
			t.Errorf("List(nar/) = %d objects, want 32: %v", len(nars), nars)
		}
		many := list(t, b, "nar/many-01")
		if len(many) != 10 {
			t.Errorf("List(nar/many-01) = %v", many)
		}
		stop := errors.New("stop")
		calls := 0
		err := b.List(ctx, "nar/", func(backend.FileInfo) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("List did not stop at fn's error: %v after %d calls", err, calls)
		}
		for _, n := range names {
			mustRemove(t, b, n)
		}
	})
	t.Run("ListManyPages", func(t *testing.T) {
		// More names than one page of an S3 listing (1000 keys) holds: every one is seen, once.
		const n = 1100
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("pages/%04d.narinfo", i)
		}
		parallel(t, names, func(name string) error { return b.Save(ctx, name, bytes.NewReader([]byte(name))) })
		seen := map[string]int{}
		if err := b.List(ctx, "pages/", func(fi backend.FileInfo) error {
			seen[fi.Name]++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if seen[name] != 1 {
				t.Errorf("List saw %s %d times", name, seen[name])
			}
		}
		if len(seen) != n {
			t.Errorf("List saw %d names, want %d", len(seen), n)
		}
		parallel(t, names, func(name string) error { return b.Remove(ctx, name) })
	})
	t.Run("InfoAndEnd", func(t *testing.T) {
		before := time.Now()
		save(t, b, "nar/info.nar", []byte("0123456789"))
		fi, err := b.Stat(ctx, "nar/info.nar")
		if err != nil {
			t.Fatal(err)
		}
		// Generous bounds: a remote store's clock may be off, and some keep whole seconds.
		if d := fi.ModTime.Sub(before); d < -time.Hour || d > time.Hour {
			t.Errorf("ModTime %v, saved at %v", fi.ModTime, before)
		}
		obj, err := b.Open(ctx, "nar/info.nar")
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		if info := obj.Info(); info.Name != "nar/info.nar" || info.Size != 10 || !info.ModTime.Equal(fi.ModTime) {
			t.Errorf("Info() = %+v, Stat = %+v", info, fi)
		}
		for _, off := range []int64{10, 11} {
			if _, err := obj.Seek(off, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if n, err := obj.Read(make([]byte, 4)); n != 0 || err != io.EOF {
				t.Errorf("Read at %d of 10 = %d, %v, want 0, io.EOF", off, n, err)
			}
		}
		obj.Seek(-3, io.SeekEnd)
		if rest, err := io.ReadAll(obj); err != nil || string(rest) != "789" {
			t.Errorf("last 3 bytes = %q, %v", rest, err)
		}
		mustRemove(t, b, "nar/info.nar")
	})
	t.Run("ConcurrentSavesOfOneName", func(t *testing.T) {
		data := make([]byte, 512<<10)
		rand.Read(data)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- b.Save(ctx, "nar/same.nar", bytes.NewReader(data))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent Save: %v", err)
			}
		}
		if got := readAll(t, b, "nar/same.nar"); !bytes.Equal(got, data) {
			t.Fatal("concurrent Saves produced a mixed object")
		}
		mustRemove(t, b, "nar/same.nar")
	})
	t.Run("LargeStreamedObject", func(t *testing.T) {
		const size = 64 << 20
		if err := b.Save(ctx, "nar/large.nar", io.LimitReader(zeroReader{}, size)); err != nil {
			t.Fatal(err)
		}
		fi, err := b.Stat(ctx, "nar/large.nar")
		if err != nil || fi.Size != size {
			t.Fatalf("Stat = %+v, %v", fi, err)
		}
		mustRemove(t, b, "nar/large.nar")
	})
	t.Run("HostileNames", func(t *testing.T) {
		for _, n := range []string{"../escape", "nar/../../escape", "/abs", "a//b", "a\\b", "", "nar/./x"} {
			if err := b.Save(ctx, n, bytes.NewReader([]byte("x"))); err == nil {
				t.Errorf("Save(%q) succeeded", n)
			}
			if _, err := b.Open(ctx, n); err == nil {
				t.Errorf("Open(%q) succeeded", n)
			}
		}
	})
}

// parallel runs fn for every name, a few at a time (a remote backend is slow one by one).
func parallel(t *testing.T, names []string, fn func(string) error) {
	t.Helper()
	work := make(chan string)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				if err := fn(name); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
				}
			}
		}()
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func save(t *testing.T, b backend.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Save(context.Background(), name, bytes.NewReader(data)); err != nil {
		t.Fatalf("Save %s: %v", name, err)
	}
}

func mustRemove(t *testing.T, b backend.Backend, name string) {
	t.Helper()
	if err := b.Remove(context.Background(), name); err != nil {
		t.Fatalf("Remove %s: %v", name, err)
	}
}

func readAll(t *testing.T, b backend.Backend, name string) []byte {
	t.Helper()
	obj, err := b.Open(context.Background(), name)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return data
}

func list(t *testing.T, b backend.Backend, prefix string) []string {
	t.Helper()
	var names []string
	if err := b.List(context.Background(), prefix, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		t.Fatalf("List %q: %v", prefix, err)
	}
	sort.Strings(names)
	return names
}

func contains(s []string, v string) bool {
	i := sort.SearchStrings(s, v)
	return i < len(s) && s[i] == v
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// cancelAfter cancels its context after n bytes were read.
type cancelAfter struct {
	r      io.Reader
	n      int
	read   int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.read >= c.n {
		c.cancel()
	}
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}
