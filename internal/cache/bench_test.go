package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/cached-dev/cached/internal/nar"
)

// BenchmarkPutNar measures ingest (hash, decompress, validate, hash, store) of a 64 MiB NAR
// uploaded as zstd and stored as is, the common case of nix copy ?compression=zstd.
func BenchmarkPutNar(b *testing.B) {
	for _, comp := range []string{"zstd", "none"} {
		b.Run(comp, func(b *testing.B) {
			c, _ := newTestCache(b, Options{StoreCompression: "zstd"})
			content := make([]byte, 32<<20)
			rand.Read(content[:16<<20]) // half random, half zeros: compresses about 2:1
			var buf bytes.Buffer
			w := nar.NewWriter(&buf)
			w.File(false, int64(len(content)), bytes.NewReader(content))
			w.Close()
			file := compressBench(comp, buf.Bytes())
			name := narName(file, comp)
			b.SetBytes(int64(buf.Len()))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.PutNar(context.Background(), name, bytes.NewReader(file)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
