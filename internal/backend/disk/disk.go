// Package disk is the local-filesystem backend: objects are files under one root directory, in
// the same layout `nix copy --to file://DIR` writes. Writes go to a temporary file in DIR/.tmp
// and are renamed into place after an fsync, so a crash never leaves a partial object visible.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cached-dev/cached/internal/backend"
)

const tmpDir = ".tmp"

// Backend stores objects as files under Root.
type Backend struct {
	root string
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Temps   = (*Backend)(nil)
)

// Open creates root if needed. Temporary files a crashed process left in root/.tmp stay until
// RemoveTemp: another process (a server still running) may be writing them.
func Open(root string) (*Backend, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("disk backend %q: %w", root, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, tmpDir), 0o755); err != nil {
		return nil, fmt.Errorf("disk backend: %w", err)
	}
	return &Backend{root: abs}, nil
}

// Temps lists the files in root/.tmp: writes in progress, or left by a process that died.
// Their names are relative to root (".tmp/save-...").
func (b *Backend) Temps(ctx context.Context) ([]backend.FileInfo, error) {
	entries, err := os.ReadDir(filepath.Join(b.root, tmpDir))
	if err != nil {
		return nil, fmt.Errorf("disk backend: %w", err)
	}
	var out []backend.FileInfo
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, backend.FileInfo{Name: tmpDir + "/" + e.Name(), Size: info.Size(), ModTime: info.ModTime()})
	}
	return out, nil
}

// RemoveTemp removes a file Temps listed.
func (b *Backend) RemoveTemp(ctx context.Context, name string) error {
	base, ok := strings.CutPrefix(name, tmpDir+"/")
	if !ok || base == "" || base == "." || base == ".." || strings.ContainsAny(base, "/\\") {
		return fmt.Errorf("disk backend: %q is not a temporary file", name)
	}
	if err := os.RemoveAll(filepath.Join(b.root, tmpDir, base)); err != nil {
		return fmt.Errorf("disk backend: %w", err)
	}
	return nil
}

// Root is the directory objects live in.
func (b *Backend) Root() string { return b.root }

func (b *Backend) path(name string) (string, error) {
	if !backend.ValidName(name) || strings.HasPrefix(name, tmpDir+"/") || name == tmpDir {
		return "", fmt.Errorf("disk backend: invalid object name %q", name)
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

// copyBuffers hold what Save writes at a time: an upload arrives in pieces of up to 256 KiB,
// and writing each in 32 KiB parts, as io.Copy would, is eight system calls instead of one.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func (b *Backend) Save(ctx context.Context, name string, rd io.Reader) (err error) {
	dst, err := b.path(name)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(b.root, tmpDir), "save-*")
	if err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	buf := copyBuffers.Get().(*[]byte)
	_, err = io.CopyBuffer(struct{ io.Writer }{f}, contextReader{ctx, rd}, *buf) // not File.ReadFrom's 32 KiB
	copyBuffers.Put(buf)
	if err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err = os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err = ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	if err = os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	// The rename is durable only once the directory is synced.
	if d, derr := os.Open(filepath.Dir(dst)); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// contextReader stops a copy when the context is cancelled, so an abandoned upload does not
// keep writing.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type object struct {
	*os.File
	info backend.FileInfo
}

// OSFile exposes the *os.File so the HTTP layer can hand it to the kernel (sendfile).
func (o object) OSFile() *os.File { return o.File }

func (o object) Info() backend.FileInfo { return o.info }

// Open returns the object with an *os.File inside; use File to reach it for zero-copy sends.
func (b *Backend) Open(ctx context.Context, name string) (backend.Object, error) {
	p, err := b.path(name)
	if err != nil {
		return nil, err
	}
	f, err := openRead(p)
	if err != nil {
		return nil, mapErr(name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, mapErr(name, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", name, backend.ErrNotExist)
	}
	return object{f, backend.FileInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}}, nil
}

func (b *Backend) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	p, err := b.path(name)
	if err != nil {
		return backend.FileInfo{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return backend.FileInfo{}, mapErr(name, err)
	}
	if !st.Mode().IsRegular() {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %w", name, backend.ErrNotExist)
	}
	return backend.FileInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	// Walk only the directory the prefix names, not the whole tree.
	dir := path.Dir(prefix)
	if strings.HasSuffix(prefix, "/") {
		dir = strings.TrimSuffix(prefix, "/")
	}
	start := b.root
	if dir != "." && dir != "" {
		if !backend.ValidName(dir) {
			return fmt.Errorf("list %q: invalid prefix", prefix)
		}
		start = filepath.Join(b.root, filepath.FromSlash(dir))
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, _ := filepath.Rel(b.root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == tmpDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(rel, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while listing
			}
			return err
		}
		return fn(backend.FileInfo{Name: rel, Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	return nil
}

func (b *Backend) Remove(ctx context.Context, name string) error {
	p, err := b.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return mapErr(name, err)
	}
	return nil
}

// Move renames an object; the rename is atomic on one filesystem.
func (b *Backend) Move(ctx context.Context, from, to string) error {
	src, err := b.path(from)
	if err != nil {
		return err
	}
	dst, err := b.path(to)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("move %s: %w", from, err)
	}
	if err := os.Rename(src, dst); err != nil {
		return mapErr(from, err)
	}
	if d, derr := os.Open(filepath.Dir(dst)); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (b *Backend) Close() error { return nil }

func mapErr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, backend.ErrNotExist)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// openRead opens a file for reading, as os.Open does, without trying to register it with the
// network poller: os.Open makes every file non-blocking, asks epoll to take it, and for a
// regular file (which epoll refuses) makes it blocking again, four fcntl calls and an
// epoll_ctl on every NAR served. A regular file is read blocking anyway.
func openRead(p string) (*os.File, error) {
	for {
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		return os.NewFile(uintptr(fd), p), nil
	}
}
