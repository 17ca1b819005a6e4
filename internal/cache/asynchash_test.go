package cache

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// TestAsyncHash checks the digest and count against crypto/sha256 for writes of every size
// around the buffer boundary, and that an abandoned hash (closed, never summed) lets go.
func TestAsyncHash(t *testing.T) {
	data := make([]byte, 3*asyncHashBufSize*asyncHashBufs+17)
	rand.Read(data)
	for _, chunk := range []int{1, 7, 4096, asyncHashBufSize - 1, asyncHashBufSize, asyncHashBufSize + 1, len(data)} {
		a := newAsyncHash(sha256.New())
		for p := data; len(p) > 0; {
			n := min(chunk, len(p))
			if m, err := a.Write(p[:n]); m != n || err != nil {
				t.Fatalf("chunk %d: Write = %d, %v", chunk, m, err)
			}
			p = p[n:]
		}
		want := sha256.Sum256(data)
		if got := a.Sum(); !bytes.Equal(got, want[:]) {
			t.Errorf("chunk %d: digest %x, want %x", chunk, got, want)
		}
		if a.n != int64(len(data)) {
			t.Errorf("chunk %d: counted %d bytes, want %d", chunk, a.n, len(data))
		}
		a.Close() // after Sum: a no-op
	}
	empty := newAsyncHash(sha256.New())
	want := sha256.Sum256(nil)
	if got := empty.Sum(); !bytes.Equal(got, want[:]) {
		t.Errorf("empty: digest %x, want %x", got, want)
	}
	for i := 0; i < 100; i++ { // abandoned part-way: Close must return, not block
		a := newAsyncHash(sha256.New())
		a.Write(data[:asyncHashBufSize*2+5])
		a.Close()
		a.Close()
	}
}
