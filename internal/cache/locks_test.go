package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/index"
)

// TestUploadsRacingDeletionNeverDeadlock re-uploads a set of paths (NAR, then narinfo) while
// other goroutines delete the same narinfos and collect their NARs, as an upload racing a gc
// does. Every lock the cache takes must be taken in one order; before that was so, a narinfo
// commit holding its store hash's lock and waiting for the references lock deadlocked against a
// deletion holding the references lock and waiting for the store hash's lock.
func TestUploadsRacingDeletionNeverDeadlock(t *testing.T) {
	c, _ := newTestCache(t, Options{StoreCompression: "as-uploaded"})
	ctx := context.Background()
	const paths = 8
	type upload struct {
		hash, url  string
		file, info []byte
	}
	ups := make([]upload, paths)
	for i := range ups {
		narBytes := testNar(t, fmt.Sprintf("locks-%d", i))
		url := narName(narBytes, "none")
		hash := testHash(i)
		ups[i] = upload{hash: hash, url: url, file: narBytes, info: narInfoFor(t, hash, narBytes, narBytes, url, "none")}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	deadline := time.Now().Add(3 * time.Second)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) { // uploader
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				u := ups[(n+w)%paths]
				if _, err := c.PutNar(ctx, u.url, bytes.NewReader(u.file)); err != nil {
					errs <- fmt.Errorf("PutNar %s: %w", u.url, err)
					return
				}
				// A 400 is allowed when a deletion won the race for the NAR in between.
				if _, err := c.PutNarInfo(ctx, u.hash, u.info); err != nil && !isInputError(err) {
					errs <- fmt.Errorf("PutNarInfo %s: %w", u.hash, err)
					return
				}
			}
		}(w)
		wg.Add(1)
		go func(w int) { // collector
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				u := ups[(n*3+w)%paths]
				if err := c.DeleteNarInfo(ctx, u.hash); err != nil && !errors.Is(err, index.ErrNotFound) {
					errs <- fmt.Errorf("DeleteNarInfo %s: %w", u.hash, err)
					return
				}
				if _, _, err := c.DeleteNarIfOrphaned(ctx, u.url, 0); err != nil {
					errs <- fmt.Errorf("DeleteNarIfOrphaned %s: %w", u.url, err)
					return
				}
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("uploads and deletions deadlocked:\n%s", buf[:runtime.Stack(buf, true)])
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func isInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
