package cache

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cached-dev/cached/internal/backend"
)

// TestDamagedStreamsRefused: an upload whose compressed stream is cut or damaged after the NAR
// (its checksums, index or trailer) is refused, under every store policy, and leaves nothing
// behind. Stored as uploaded, such a file would be served, and nix could not unpack it.
func TestDamagedStreamsRefused(t *testing.T) {
	ctx := context.Background()
	xzNoIndex := func(b []byte) []byte { // whole blocks, then neither index nor footer
		footer := b[len(b)-12:]
		index := (int(footer[4]) | int(footer[5])<<8 | int(footer[6])<<16 | int(footer[7])<<24 + 1) * 4
		return b[:len(b)-12-index]
	}
	flipBefore := func(n int) func([]byte) []byte {
		return func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-n] ^= 0xff; return b }
	}
	cut := func(n int) func([]byte) []byte { return func(b []byte) []byte { return b[:len(b)-n] } }
	cases := []struct {
		name, comp string
		damage     func([]byte) []byte
	}{
		{"xz without index and footer", "xz", xzNoIndex},
		{"xz without footer", "xz", cut(12)},
		{"xz with a damaged index", "xz", flipBefore(13)},
		{"zstd without its checksum", "zstd", cut(4)},
		{"zstd with a wrong checksum", "zstd", flipBefore(1)},
		{"bzip2 cut short", "bzip2", cut(10)},
		{"br cut short", "br", cut(1)},
	}
	for _, policy := range []string{"as-uploaded", "xz", "zstd"} {
		for _, tc := range cases {
			t.Run(policy+"/"+tc.name, func(t *testing.T) {
				c, be := newTestCache(t, Options{StoreCompression: policy})
				file := tc.damage(compress(t, tc.comp, testNar(t, tc.name)))
				_, err := c.PutNar(ctx, narName(file, tc.comp), bytes.NewReader(file))
				var ie *InputError
				if !errors.As(err, &ie) {
					t.Fatalf("PutNar of a damaged upload: %v, want an InputError", err)
				}
				t.Logf("refused: %v", err)
				be.List(ctx, "", func(fi backend.FileInfo) error {
					if fi.Name != "nix-cache-info" {
						t.Errorf("left behind: %s", fi.Name)
					}
					return nil
				})
			})
		}
	}
}
