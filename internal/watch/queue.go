package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/narinfo"
)

// Queue is a durable queue of store paths to push: a directory holding one empty file per
// queued path, named by the path's basename (<hash>-<name>). Adding a path is creating its
// file, which survives the process being killed at any moment; a path leaves the queue only
// when it is pushed (Remove) or can never be (Fail moves it to failed/ with the reason).
// Several processes may add to one queue at once (watch-store, post-build hooks).
type Queue struct {
	dir      string
	storeDir string
}

// failedDir is the subdirectory of the queue for paths that can never be pushed.
const failedDir = "failed"

// OpenQueue opens (creating it if needed) the queue in dir, for paths of storeDir.
func OpenQueue(dir, storeDir string) (*Queue, error) {
	if dir == "" {
		return nil, errors.New("queue directory: none given")
	}
	if err := os.MkdirAll(filepath.Join(dir, failedDir), 0o755); err != nil {
		return nil, fmt.Errorf("queue directory %s: %w", dir, err)
	}
	return &Queue{dir: dir, storeDir: storeDir}, nil
}

// Dir is the queue's directory.
func (q *Queue) Dir() string { return q.dir }

// entryName is the file name of a store path in the queue, checking that it is one.
func (q *Queue) entryName(path string) (string, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	if dir != q.storeDir {
		return "", fmt.Errorf("%q is not a path in %s", path, q.storeDir)
	}
	if _, _, _, err := narinfo.ParseStorePath(q.storeDir + "/" + base); err != nil {
		return "", fmt.Errorf("%q: %w", path, err)
	}
	return base, nil
}

// Add queues paths (store paths). A path queued already stays queued once. The paths are on
// disk when Add returns: a crash of the machine right after loses none of them.
func (q *Queue) Add(paths ...string) error {
	if len(paths) == 0 {
		return nil
	}
	for _, p := range paths {
		name, err := q.entryName(p)
		if err != nil {
			return fmt.Errorf("queue %s: %w", q.dir, err)
		}
		f, err := os.OpenFile(filepath.Join(q.dir, name), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("queue %s: %w", p, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("queue %s: %w", p, err)
		}
	}
	return syncDir(q.dir)
}

// List returns up to max queued paths (all if max <= 0), those queued first first.
func (q *Queue) List(max int) ([]string, error) {
	entries, err := os.ReadDir(q.dir)
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", q.dir, err)
	}
	type queued struct {
		path string
		at   time.Time
	}
	var items []queued
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := q.storeDir + "/" + e.Name()
		if _, _, _, err := narinfo.ParseStorePath(path); err != nil {
			continue // not an entry: something else someone left in the directory
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // pushed meanwhile
			}
			return nil, fmt.Errorf("queue %s: %w", q.dir, err)
		}
		items = append(items, queued{path, info.ModTime()})
	}
	slices.SortStableFunc(items, func(a, b queued) int { return a.at.Compare(b.at) })
	if max > 0 && len(items) > max {
		items = items[:max]
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.path
	}
	return out, nil
}

// Len is how many paths are queued.
func (q *Queue) Len() (int, error) {
	l, err := q.List(0)
	return len(l), err
}

// Remove takes paths out of the queue (they are pushed). A path not queued is no error.
func (q *Queue) Remove(paths ...string) error {
	for _, p := range paths {
		name, err := q.entryName(p)
		if err != nil {
			return fmt.Errorf("queue %s: %w", q.dir, err)
		}
		if err := os.Remove(filepath.Join(q.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("queue %s: %w", q.dir, err)
		}
	}
	return syncDir(q.dir)
}

// Fail takes path out of the queue into failed/, with why in the file: it can never be pushed
// as it is (the server refused it, or the store's copy is corrupt). Moving it back into the
// queue directory queues it again.
func (q *Queue) Fail(path string, why error) error {
	name, err := q.entryName(path)
	if err != nil {
		return fmt.Errorf("queue %s: %w", q.dir, err)
	}
	dst := filepath.Join(q.dir, failedDir, name)
	if err := os.WriteFile(dst, []byte(why.Error()+"\n"), 0o644); err != nil {
		return fmt.Errorf("queue %s: %w", q.dir, err)
	}
	if err := os.Remove(filepath.Join(q.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue %s: %w", q.dir, err)
	}
	return syncDir(q.dir)
}

// ErrQueueBusy is a queue that another watch-store pushes from.
var ErrQueueBusy = errors.New("another cached watch-store pushes from this queue")

// Lock makes the caller the only pusher of the queue until release is called or the process
// ends (a killed process holds nothing). Adding to a locked queue needs no lock.
func (q *Queue) Lock() (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(q.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", q.dir, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("queue %s: %w (%v)", q.dir, ErrQueueBusy, err)
	}
	return func() { f.Close() }, nil
}

// Failed lists the paths in failed/.
func (q *Queue) Failed() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(q.dir, failedDir))
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", q.dir, err)
	}
	var out []string
	for _, e := range entries {
		if _, _, _, err := narinfo.ParseStorePath(q.storeDir + "/" + e.Name()); err == nil {
			out = append(out, q.storeDir+"/"+e.Name())
		}
	}
	return out, nil
}

// syncDir makes the directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
