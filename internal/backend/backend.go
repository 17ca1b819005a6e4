// Package backend defines where a cache's files live. A backend stores opaque, named objects
// ("abc.narinfo", "nar/xyz.nar.zst", "log/foo.drv") in the layout `nix copy --to file://`
// writes, so that plain nix can read what cached stored and cached can serve what nix wrote.
//
// A backend knows nothing of Nix, HTTP, retries or metrics: those wrap it. It must never make a
// partly written object visible.
package backend

import (
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// ErrNotExist is returned (wrapped) when a named object does not exist. Check with errors.Is.
var ErrNotExist = errors.New("object does not exist")

// FileInfo describes a stored object.
type FileInfo struct {
	Name    string // name relative to the backend root, slash-separated
	Size    int64
	ModTime time.Time
}

// Object is an open, stored object. It is an io.ReadSeeker so that HTTP range requests can be
// answered from it; the disk backend returns an *os.File inside, which lets the kernel send it
// with sendfile.
type Object interface {
	io.ReadSeekCloser
	Info() FileInfo
}

// Backend is the storage contract every implementation passes (see the conformance suite in
// backendtest).
type Backend interface {
	// Save stores everything read from rd under name. The object becomes visible only after rd
	// returned io.EOF and the data is durable; if reading rd fails (a verifying reader refusing
	// the content is such a failure) or ctx is cancelled, nothing is stored, an existing object
	// under name is left untouched, and the error is returned. Saving over an existing object
	// replaces it atomically; concurrent Saves of one name each succeed, and one of them wins.
	Save(ctx context.Context, name string, rd io.Reader) error

	// Open opens the object for reading. A missing object is ErrNotExist.
	Open(ctx context.Context, name string) (Object, error)

	// Stat describes the object. A missing object is ErrNotExist.
	Stat(ctx context.Context, name string) (FileInfo, error)

	// List calls fn for every object whose name starts with prefix, in no particular order.
	// Objects saved or removed while List runs may or may not be seen. An error from fn stops
	// the listing and is returned.
	List(ctx context.Context, prefix string, fn func(FileInfo) error) error

	// Remove deletes the object. Removing a missing object is ErrNotExist.
	Remove(ctx context.Context, name string) error

	// Close releases the backend's resources.
	Close() error
}

// Temps is implemented by backends that write through temporary files kept apart from the
// objects (the disk backend's .tmp): a process that dies mid-write leaves them behind, and List
// never shows them.
type Temps interface {
	// Temps lists the temporary files, writes in progress included.
	Temps(ctx context.Context) ([]FileInfo, error)
	// RemoveTemp removes one that Temps listed; removing a missing one is not an error. Only
	// safe when no write can be in flight.
	RemoveTemp(ctx context.Context, name string) error
}

// Mover is implemented by backends that can give an object a new name without sending its bytes
// again (a rename on disk, a server-side copy on S3). The object appears under to only complete;
// from is gone afterwards. Backends without it are moved by copying through the client.
type Mover interface {
	Move(ctx context.Context, from, to string) error
}

// Optional capabilities. A backend or object has one if it implements the interface; callers
// find it with As (backends, through wrappers) or a type assertion (objects).

// LocalFile is implemented by objects that are files on the local disk (the disk backend's): the
// HTTP layer hands the *os.File to the kernel (sendfile), and a retrying wrapper leaves it bare.
type LocalFile interface {
	OSFile() *os.File
}

// Redirector is implemented by backends whose objects a client can fetch without the server
// (S3): PresignGet returns a URL that GETs the object until expiry has passed, Key the object's
// key, for a CDN in front of the bucket.
type Redirector interface {
	PresignGet(ctx context.Context, name string, expiry time.Duration) (string, error)
	Key(name string) (string, error)
}

// Sweeper is implemented by backends whose failed writes can leave debris that costs money (S3's
// incomplete multipart uploads): RunSweeper removes debris older than olderThan every interval
// until ctx is done, logging failures.
type Sweeper interface {
	RunSweeper(ctx context.Context, every, olderThan time.Duration)
}

// Wrapper is implemented by backends that wrap another (the retrying one): Unwrap returns it.
type Wrapper interface {
	Unwrap() Backend
}

// As reports whether b, or a backend it wraps (through Wrapper, outermost first), is a T, and
// returns the first that is. A wrapper that implements T itself (retry's Mover) is preferred to
// what it wraps.
func As[T any](b Backend) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		w, ok := b.(Wrapper)
		if !ok {
			break
		}
		b = w.Unwrap()
	}
	var zero T
	return zero, false
}

// Move renames an object through b's Mover if it has one, else by copying (MoveByCopy).
func Move(ctx context.Context, b Backend, from, to string) error {
	if m, ok := As[Mover](b); ok {
		return m.Move(ctx, from, to)
	}
	return MoveByCopy(ctx, b, from, to)
}

// MoveByCopy moves an object through the client: it opens from, saves it as to, then removes
// from. The object appears under to only complete (Save's contract).
func MoveByCopy(ctx context.Context, b Backend, from, to string) error {
	obj, err := b.Open(ctx, from)
	if err != nil {
		return err
	}
	defer obj.Close()
	if err := b.Save(ctx, to, obj); err != nil {
		return err
	}
	return b.Remove(ctx, from)
}

// ValidName reports whether name is acceptable as an object name: relative, slash-separated,
// no empty, "." or ".." segments, no backslash or NUL. The server checks names before they get
// here; backends check again because a traversal must never reach the filesystem or a bucket.
func ValidName(name string) bool {
	if name == "" || len(name) > 1024 {
		return false
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) {
			c := name[i]
			if c == 0 || c == '\\' {
				return false
			}
			if c != '/' {
				continue
			}
		}
		seg := name[start:i]
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		start = i + 1
	}
	return true
}
