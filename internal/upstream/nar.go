package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/narinfo"
)

// A NAR is pulled once, however many clients ask for it at once: the first request starts a
// fetch, which streams the upstream's bytes into the cache (verified as an upload is) and, as
// they pass, into a spool file. Every client, the first included, reads the spool behind the
// fetch, at its own pace, so that a slow or departing client neither slows nor cancels it. The
// last byte is held back until the cache has verified and committed the NAR: a client whose
// NAR fails sees its connection cut short of the Content-Length, never a complete wrong answer.

// resumeRetries is how many times a NAR download that breaks is resumed from where it stopped.
const resumeRetries = 2

// fetch is one NAR download in flight.
type fetch struct {
	name  string
	size  int64 // the file's size per its narinfo; -1 when the narinfo says none
	spool *os.File

	mu       sync.Mutex
	cond     *sync.Cond
	written  int64
	verified bool // every byte written verified: clients may have them all, whatever follows
	done     bool
	err      error // why the fetch failed, once done
	readers  int   // the spool is closed when the fetch is done and no reader is left
}

// PendingNar reports whether name is the NAR of a pulled narinfo not stored yet, and its size
// (-1 if its narinfo gives none), without fetching it (HEAD).
func (p *Puller) PendingNar(name string) (size int64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.byNar[name]
	if len(list) == 0 {
		return 0, false
	}
	return fileSize(list[0].ni), true
}

func fileSize(ni *narinfo.NarInfo) int64 {
	if ni.FileSize == 0 {
		return -1
	}
	return int64(ni.FileSize)
}

// OpenNar opens the NAR object name of a pulled narinfo, starting its download if none is in
// flight. The reader returns the NAR as it arrives and fails (never ends early) if the download
// or its verification does; size is -1 when the narinfo gives none. It returns
// cache.ErrNotFound when name is no pulled narinfo's NAR.
func (p *Puller) OpenNar(ctx context.Context, name string) (rc io.ReadCloser, size int64, err error) {
	p.mu.Lock()
	f, ok := p.fetches[name]
	if !ok {
		list := p.byNar[name]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil, 0, cache.ErrNotFound
		}
		f, err = p.startFetch(list[0])
		if err != nil {
			p.mu.Unlock()
			return nil, 0, err
		}
	}
	f.mu.Lock()
	f.readers++
	f.mu.Unlock()
	p.mu.Unlock()
	r := &follower{f: f, ctx: ctx}
	// A client that goes away while it waits for bytes is woken to notice.
	r.stopWake = context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	return r, f.size, nil
}

// startFetch starts downloading pe's NAR; p.mu is held.
func (p *Puller) startFetch(pe *pending) (*fetch, error) {
	spool, err := os.CreateTemp(p.spoolDir, "cached-pull-*")
	if err != nil {
		return nil, fmt.Errorf("spool for %s: %w", pe.nar, err)
	}
	os.Remove(spool.Name()) // open handles keep it; nothing is left behind by a crash
	f := &fetch{name: pe.nar, size: fileSize(pe.ni), spool: spool}
	f.cond = sync.NewCond(&f.mu)
	p.fetches[pe.nar] = f
	p.fetchDone.Add(1)
	go func() {
		defer p.fetchDone.Done()
		err := p.runFetch(f, pe)
		p.mu.Lock()
		delete(p.fetches, pe.nar)
		for _, x := range p.byNar[pe.nar] {
			p.dropPendingLocked(x)
		}
		// A NAR that failed is forgotten with its narinfos: the next client asking pulls the
		// narinfo again (a transient failure) or is refused again (a bad upstream).
		p.mu.Unlock()
		f.finish(err)
	}()
	return f, nil
}

// runFetch downloads and stores pe's NAR, then commits every pending narinfo naming it.
func (p *Puller) runFetch(f *fetch, pe *pending) error {
	start := time.Now()
	u := pe.from
	ni, err := narinfo.Parse(pe.text) // a copy of its own: committing rewrites it
	if err != nil {
		return fmt.Errorf("pending narinfo of %s: %w", pe.ni.StorePath, err)
	}
	resp, cancel, found, err := u.get(p.ctx, pe.upstrURL)
	if err != nil {
		p.metrics.request(u, "nar", resultOf(err))
		p.log.Warn("upstream NAR download failed", "upstream", u.name, "nar", f.name, "err", err)
		return err
	}
	if !found {
		p.metrics.request(u, "nar", "not_found")
		p.log.Warn("upstream lacks the NAR its narinfo names", "upstream", u.name, "url", pe.upstrURL, "storePath", ni.StorePath)
		return fmt.Errorf("upstream %s has no %s: %w", u.name, pe.upstrURL, cache.ErrNotFound)
	}
	validator := resp.Header.Get("ETag")
	if validator == "" || strings.HasPrefix(validator, "W/") {
		validator = resp.Header.Get("Last-Modified")
	}
	rb := &resumingBody{
		ctx: p.ctx, u: u, rel: pe.upstrURL, validator: validator, rc: resp.Body, cancel: cancel, retries: resumeRetries,
		log: func(from int64, err error) {
			p.log.Warn("upstream NAR download broke; resuming", "upstream", u.name, "nar", f.name, "from", from, "err", err)
		},
	}
	defer rb.Close()
	// A body longer than the narinfo says fails the file hash anyway; it must not run forever.
	limit := int64(ni.FileSize) + 1
	if ni.FileSize == 0 {
		limit = int64(ni.NarSize) + int64(ni.NarSize)/8 + 1<<20
	}
	body := io.TeeReader(io.LimitReader(rb, limit), f)
	_, err = p.store.PutPulled(p.ctx, ni, body, f.verify)
	if err != nil {
		var ie *cache.InputError
		result := resultOf(err)
		if errors.As(err, &ie) {
			result = "refused"
			p.metrics.refused.WithLabelValues(u.name, "bad_nar").Inc()
		} else if p.ctx.Err() == nil && !errors.Is(err, ErrIdle) {
			u.breaker.failure(time.Now())
		}
		p.metrics.request(u, "nar", result)
		p.log.Warn("pulled NAR not stored", "upstream", u.name, "nar", f.name, "storePath", ni.StorePath, "err", err)
		return err
	}
	f.mu.Lock()
	n := f.written
	f.mu.Unlock()
	if rb.resumed > 0 {
		p.metrics.request(u, "nar", "resumed")
	}
	p.metrics.request(u, "nar", "ok")
	p.metrics.bytes.WithLabelValues(u.name).Add(float64(n))
	p.log.Info("pulled NAR stored", "upstream", u.name, "nar", f.name, "storePath", ni.StorePath, "bytes", n, "duration", time.Since(start))
	// Other paths may share this NAR: their narinfos are committed too.
	p.mu.Lock()
	others := append([]*pending(nil), p.byNar[pe.nar]...)
	p.mu.Unlock()
	for _, o := range others {
		if o == pe {
			continue
		}
		oni, err := narinfo.Parse(o.text)
		if err == nil {
			_, err = p.store.PutPulled(p.ctx, oni, nil, nil)
		}
		if err != nil {
			p.log.Warn("committing a pulled narinfo sharing a NAR", "storePath", o.ni.StorePath, "nar", f.name, "err", err)
		}
	}
	return nil
}

// Write appends to the spool what the cache has read of the upstream's body.
func (f *fetch) Write(b []byte) (int, error) {
	f.mu.Lock()
	off := f.written
	f.mu.Unlock()
	n, err := f.spool.WriteAt(b, off)
	f.mu.Lock()
	f.written += int64(n)
	f.cond.Broadcast()
	f.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("spool of %s: %w", f.name, err)
	}
	return n, nil
}

// verify is called when the cache has verified the NAR, before it commits it: the clients need
// not wait for the commit (a failure there costs the store, not them, the bytes).
func (f *fetch) verify() {
	f.mu.Lock()
	if f.size < 0 || f.written == f.size {
		f.verified = true
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *fetch) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	if err == nil && f.size >= 0 && f.written != f.size {
		f.err = fmt.Errorf("%s: %d bytes verified, not the %d of its narinfo", f.name, f.written, f.size)
	}
	f.cond.Broadcast()
	last := f.readers == 0
	f.mu.Unlock()
	if last {
		f.spool.Close()
	}
}

// follower reads a fetch's spool behind it.
type follower struct {
	f        *fetch
	ctx      context.Context
	stopWake func() bool
	off      int64
	closed   bool
}

// errPulledNarFailed is what a client's stream ends with when the download or its verification
// failed.
var errPulledNarFailed = errors.New("pulled NAR failed")

// readable is how much of the spool clients may have: all of it once verified, else all but
// its last byte, and never the whole file its narinfo announces (an upstream sending more than
// that must not complete a client's answer before the verdict). f.mu is held.
func (f *fetch) readable() int64 {
	if f.verified || f.done && f.err == nil {
		return f.written
	}
	n := f.written - 1
	if f.size >= 0 {
		n = min(n, f.size-1)
	}
	return n
}

func (r *follower) Read(b []byte) (int, error) {
	f := r.f
	f.mu.Lock()
	for {
		if f.done && f.err != nil && !f.verified {
			err := f.err
			f.mu.Unlock()
			return 0, fmt.Errorf("%w: %w", errPulledNarFailed, err)
		}
		avail := f.readable() - r.off
		if avail > 0 {
			break
		}
		if f.done || f.verified {
			f.mu.Unlock()
			return 0, io.EOF
		}
		if r.ctx.Err() != nil {
			f.mu.Unlock()
			return 0, r.ctx.Err()
		}
		f.cond.Wait()
	}
	avail := f.readable() - r.off
	f.mu.Unlock()
	if int64(len(b)) > avail {
		b = b[:avail]
	}
	n, err := f.spool.ReadAt(b, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *follower) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.stopWake()
	f := r.f
	f.mu.Lock()
	f.readers--
	last := f.readers == 0 && f.done
	f.mu.Unlock()
	if last {
		f.spool.Close()
	}
	return nil
}
