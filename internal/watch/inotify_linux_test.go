package watch

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// record is one inotify record as the kernel writes it.
func record(wd int32, mask uint32, name string) []byte {
	size := (len(name) + 1 + 15) / 16 * 16
	b := make([]byte, unix.SizeofInotifyEvent+size)
	binary.NativeEndian.PutUint32(b[0:], uint32(wd))
	binary.NativeEndian.PutUint32(b[4:], mask)
	binary.NativeEndian.PutUint32(b[12:], uint32(size))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestNotifierParse(t *testing.T) {
	n := &notifier{kind: map[int32]eventKind{1: lockRemoved, 2: dbChanged, 3: queueChanged}}
	var b []byte
	b = append(b, record(1, unix.IN_DELETE, "00000000000000000000000000000000-a.lock")...)
	b = append(b, record(1, unix.IN_DELETE, "00000000000000000000000000000000-a")...) // gc, not a lock
	b = append(b, record(1, unix.IN_DELETE|unix.IN_ISDIR, "x.lock")...)
	b = append(b, record(2, unix.IN_MODIFY, "db.sqlite-wal")...)
	b = append(b, record(2, unix.IN_MODIFY, "db.sqlite-shm")...)
	b = append(b, record(2, unix.IN_MODIFY, "big-lock")...)
	b = append(b, record(3, unix.IN_CREATE, ".known.tmp")...)
	b = append(b, record(3, unix.IN_CREATE, "11111111111111111111111111111111-b")...)
	b = append(b, record(9, unix.IN_CREATE, "unknown-watch")...)
	b = append(b, record(-1, unix.IN_Q_OVERFLOW, "")...)
	b = append(b, record(1, unix.IN_DELETE, "truncated.lock")[:20]...)
	got := n.parse(b)
	want := []event{
		{lockRemoved, "00000000000000000000000000000000-a"},
		{dbChanged, "db.sqlite-wal"},
		{queueChanged, "11111111111111111111111111111111-b"},
		{overflow, ""},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parse:\ngot  %v\nwant %v", got, want)
	}
}

func FuzzNotifierParse(f *testing.F) {
	f.Add(record(1, unix.IN_DELETE, "00000000000000000000000000000000-a.lock"))
	f.Add(append(record(2, unix.IN_MODIFY, "db.sqlite"), 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := &notifier{kind: map[int32]eventKind{1: lockRemoved, 2: dbChanged, 3: queueChanged}}
		n.parse(b) // must not panic, whatever the bytes
	})
}

// TestNotifierSeesLockRemoval: a real inotify watch reports the removal of a lock file in
// the store directory as the path it locked.
func TestNotifierSeesLockRemoval(t *testing.T) {
	store, db, queue := t.TempDir(), t.TempDir(), t.TempDir()
	n, err := newNotifier(store, db, queue)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan event, 16)
	go n.run(events)
	defer n.Close()
	lock := filepath.Join(store, "00000000000000000000000000000000-a.lock")
	os.WriteFile(lock, nil, 0o600)
	os.Remove(lock)
	select {
	case ev := <-events:
		if ev != (event{lockRemoved, "00000000000000000000000000000000-a"}) {
			t.Fatalf("got %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	if _, err := newNotifier(filepath.Join(store, "missing"), db, queue); err == nil {
		t.Error("a missing store directory: no error")
	}
	// An unreadable database directory is watched without: lock files still tell.
	n2, err := newNotifier(store, filepath.Join(db, "missing"), queue)
	if err != nil || n2.dbErr == nil {
		t.Fatalf("a missing database directory: %v, dbErr %v; want a notifier without it", err, n2.dbErr)
	}
	n2.Close()
}
