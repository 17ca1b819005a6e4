package cache

import (
	"compress/bzip2"
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/cached-dev/cached/internal/xzlimit"
	"github.com/klauspost/compress/zstd"
)

// decompressor returns a reader of the uncompressed bytes of r, which is in the named narinfo
// compression. Memory stays bounded whatever the input: zstd's window is capped.
func decompressor(compression string, r io.Reader) (io.ReadCloser, error) {
	switch compression {
	case "none":
		return io.NopCloser(r), nil
	case "xz":
		// The dictionary is capped as zstd's window is: an xz header may declare up to 4 GiB,
		// and xz -9 (the most Nix uses) needs 64 MiB.
		xr, err := xzlimit.NewReader(r, 128<<20)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case "bzip2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	case "br":
		return io.NopCloser(brotli.NewReader(r)), nil
	}
	return nil, fmt.Errorf("unsupported compression %q", compression)
}
