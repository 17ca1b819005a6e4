package cache

import (
	"hash"
	"sync"
)

// asyncHash is an io.Writer that hashes (and counts) what is written to it on a goroutine of its
// own. An upload is hashed twice (the file as sent, the NAR inside it) and decompressed, one after
// the other on one goroutine; nix waits for the answer to each NAR PUT before it goes on, so that
// sum is the upload's latency. With the hashes on their own goroutines the three overlap, and the
// answer comes as soon as the slowest of them is done.
//
// Memory is bounded: at most asyncHashBufs buffers of asyncHashBufSize are in flight per hash, and
// Write blocks while they all are.
type asyncHash struct {
	h    hash.Hash
	n    int64
	cur  []byte      // the buffer being filled, nil when none
	work chan []byte // filled buffers, to the hashing goroutine
	free chan []byte // hashed buffers, back to Write
	made int         // buffers taken from the pool so far
	done chan struct{}
	stop sync.Once
}

const (
	asyncHashBufSize = 128 << 10
	asyncHashBufs    = 4
)

var asyncHashPool = sync.Pool{New: func() any { b := make([]byte, asyncHashBufSize); return &b }}

func newAsyncHash(h hash.Hash) *asyncHash {
	a := &asyncHash{
		h:    h,
		work: make(chan []byte, asyncHashBufs),
		free: make(chan []byte, asyncHashBufs),
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

func (a *asyncHash) Write(p []byte) (int, error) {
	n := len(p)
	a.n += int64(n)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = a.buffer()
		}
		c := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+c]
		p = p[c:]
		if len(a.cur) == cap(a.cur) {
			a.work <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// buffer returns an empty buffer: a new one while fewer than asyncHashBufs exist, else the next
// one the hashing goroutine is done with.
func (a *asyncHash) buffer() []byte {
	select {
	case b := <-a.free:
		return b
	default:
	}
	if a.made < asyncHashBufs {
		a.made++
		return (*asyncHashPool.Get().(*[]byte))[:0]
	}
	return <-a.free
}

// Sum waits until everything written has been hashed and returns the digest. No Write may follow.
func (a *asyncHash) Sum() []byte {
	if len(a.cur) > 0 {
		a.work <- a.cur
		a.cur = nil
	}
	a.Close()
	return a.h.Sum(nil)
}

// Close stops the hashing goroutine and returns the buffers to the pool; it may be called more
// than once, and after Sum. An upload that fails part-way closes its hashes without summing them.
func (a *asyncHash) Close() {
	a.stop.Do(func() {
		close(a.work)
		<-a.done
		if a.cur != nil {
			a.free <- a.cur[:0]
			a.cur = nil
		}
		for a.made > 0 {
			b := <-a.free
			a.made--
			asyncHashPool.Put(&b)
		}
	})
}
