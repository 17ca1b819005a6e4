package cache

import (
	"bytes"
	"compress/gzip"
	"io"
	"runtime"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

var decoderCompressions = []string{"none", "xz", "zstd", "bzip2", "br", "gzip"}

// FuzzNewDecoder: no input panics a decoder; what need is told is within the window limit
// (brotli's format limit, 16 MiB, if larger; plus the decoder's own tables) and only grows; and decoding allocates no more than what
// need was told beyond a small margin per decoded byte.
func FuzzNewDecoder(f *testing.F) {
	data := bytes.Repeat([]byte("some NAR contents\n"), 2000)
	add := func(kind byte, w io.WriteCloser, buf *bytes.Buffer) {
		w.Write(data)
		w.Close()
		f.Add(kind, buf.Bytes())
	}
	var b1, b2, b3, b4 bytes.Buffer
	xw, _ := xz.NewWriter(&b1)
	add(1, xw, &b1)
	zw, _ := zstd.NewWriter(&b2)
	add(2, zw, &b2)
	add(4, brotli.NewWriter(&b3), &b3)
	add(5, gzip.NewWriter(&b4), &b4)
	f.Add(byte(2), []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 0xff, 0, 0})    // single segment
	f.Add(byte(2), []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0x80}) // 8-byte content size
	f.Add(byte(3), []byte("BZh91AY&SY"))
	f.Fuzz(func(t *testing.T, kind byte, file []byte) {
		const maxWindow, out = 8 << 20, 1 << 20
		compression := decoderCompressions[int(kind)%len(decoderCompressions)]
		var told int64
		need := func(n int64) error {
			if n <= told || n > max(maxWindow, 16<<20)+2<<20 { // brotli's windows go to 16 MiB

				t.Fatalf("%s: need told %d after %d (window limit %d)", compression, n, told, maxWindow)
			}
			told = n
			return nil
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		dec, err := NewDecoder(compression, bytes.NewReader(file), maxWindow, need)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(dec, out))
			dec.Close()
		}
		runtime.ReadMemStats(&after)
		// xz may churn up to 16 MiB and 64 bytes per decoded byte beyond its dictionary
		// (xzlimit); the others take their window once, plus buffers.
		if grew := int64(after.TotalAlloc - before.TotalAlloc); grew > told+16<<20+64*out+8<<20 {
			t.Fatalf("%s: decoding %d bytes allocated %d MiB, need was told %d MiB", compression, len(file), grew>>20, told>>20)
		}
	})
}
