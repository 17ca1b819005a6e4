package watch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// notifier reports changes in the store, its database and the queue through inotify.
type notifier struct {
	f    *os.File
	kind map[int32]eventKind // by watch descriptor
	// dbErr is why the database directory is not watched (it may be unreadable to the
	// watcher's user): lock files and scans still find every path.
	dbErr error
}

// newNotifier watches the store directory for lock files being deleted (nix deletes
// <path>.lock once it has registered <path> as valid), the database directory for writes, and
// the queue directory for entries added by other processes.
func newNotifier(storeDir, dbDir, queueDir string) (*notifier, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	// Non-blocking, the file is served by the runtime's poller: Close ends a pending Read.
	n := &notifier{f: os.NewFile(uintptr(fd), "inotify"), kind: map[int32]eventKind{}}
	for _, w := range []struct {
		dir  string
		mask uint32
		kind eventKind
	}{
		{storeDir, unix.IN_DELETE, lockRemoved},
		{dbDir, unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_CREATE, dbChanged},
		{queueDir, unix.IN_CREATE | unix.IN_MOVED_TO, queueChanged},
	} {
		wd, err := unix.InotifyAddWatch(fd, w.dir, w.mask|unix.IN_ONLYDIR)
		if err != nil && w.kind == dbChanged {
			n.dbErr = fmt.Errorf("inotify on %s: %w", w.dir, err)
			continue
		}
		if err != nil {
			n.f.Close()
			return nil, fmt.Errorf("inotify on %s: %w", w.dir, err) // wraps ENOENT for a missing directory
		}
		n.kind[int32(wd)] = w.kind
	}
	return n, nil
}

// run sends the events it reads to out until the notifier is closed. It never blocks on out:
// when out is full, an overflow event takes the place of what could not be sent.
func (n *notifier) run(out chan<- event) error {
	buf := make([]byte, 64<<10)
	for {
		k, err := n.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("inotify: %w", err)
		}
		for _, ev := range n.parse(buf[:k]) {
			select {
			case out <- ev:
			default:
				select {
				case out <- event{kind: overflow}:
				default:
				}
			}
		}
	}
}

// parse reads the inotify records in b.
func (n *notifier) parse(b []byte) []event {
	var evs []event
	for len(b) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(b[0:4]))
		mask := binary.NativeEndian.Uint32(b[4:8])
		size := int(binary.NativeEndian.Uint32(b[12:16]))
		if unix.SizeofInotifyEvent+size > len(b) {
			break
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:unix.SizeofInotifyEvent+size]), "\x00")
		b = b[unix.SizeofInotifyEvent+size:]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			evs = append(evs, event{kind: overflow})
			continue
		}
		kind, ok := n.kind[wd]
		if !ok {
			continue
		}
		switch kind {
		case lockRemoved:
			base, isLock := strings.CutSuffix(name, ".lock")
			if !isLock || mask&unix.IN_ISDIR != 0 {
				continue
			}
			name = base
		case queueChanged:
			if strings.HasPrefix(name, ".") {
				continue // the watcher's own state files
			}
		case dbChanged:
			// db.sqlite and its write-ahead log; not big-lock, schema or the shared-memory index.
			if !strings.HasPrefix(name, "db.sqlite") || strings.HasSuffix(name, "-shm") {
				continue
			}
		}
		evs = append(evs, event{kind: kind, name: name})
	}
	return evs
}

func (n *notifier) Close() error { return n.f.Close() }
