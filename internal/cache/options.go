package cache

import (
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/cached-dev/cached/internal/signing"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Options are the cache's storage policies.
type Options struct {
	// StoreCompression is what NARs are stored in: "zstd" (uploads in xz, bzip2, br or none are
	// recompressed while they stream in), "xz" (everything is recompressed to xz), or
	// "as-uploaded".
	StoreCompression string
	// ZstdLevel is the zstd level (1-22, mapped onto klauspost/compress's levels). 0 means 3.
	ZstdLevel int
	// ZstdConcurrency is how many blocks one upload compresses in parallel. 0 means GOMAXPROCS.
	ZstdConcurrency int
	// ReadThrough makes a narinfo missing from the index be looked up in the backend (replicas
	// sharing a bucket), remembering a miss for NegativeTTL.
	ReadThrough bool
	NegativeTTL time.Duration
	// Recompressions bounds how many NARs are recompressed at once for clients that ask for one
	// under its uploaded name (OpenUploaded), or decompressed for a URL that names a store path
	// (OpenStoreNar); others wait their turn. 0 means GOMAXPROCS.
	Recompressions int
	// MaxNarSize bounds an uploaded NAR's decompressed size, in bytes (0: no bound). Past it the
	// upload fails with a *NarTooLargeError and nothing is stored.
	MaxNarSize int64
	// DecoderMemory, when not nil, is the memory budget that the decoders of concurrent uploads
	// reserve what their streams declare from before decoding (package membudget).
	DecoderMemory *membudget.Budget
	// UploadKeys, when not empty, makes every uploaded narinfo need a valid signature by one of
	// them (--require-upload-sigs): only paths a trusted builder signed get in.
	UploadKeys []signing.PublicKey
	// Priority is the one announced in the backend's nix-cache-info, which New writes (or
	// rewrites, when it says another) for plain nix reading the backend directly. 0 (the tools
	// that are not the server) leaves an existing file as it is and writes DefaultPriority.
	Priority int
}

func (o Options) validate() error {
	switch o.StoreCompression {
	case "", "zstd", "xz", "as-uploaded":
	default:
		return fmt.Errorf("store compression %q: want zstd, xz or as-uploaded", o.StoreCompression)
	}
	if o.ZstdLevel < 0 || o.ZstdLevel > 22 {
		return fmt.Errorf("zstd level %d: want 1..22", o.ZstdLevel)
	}
	if o.MaxNarSize < 0 {
		return fmt.Errorf("max NAR size %d: want 0 (no limit) or more", o.MaxNarSize)
	}
	if o.Recompressions < 0 {
		return fmt.Errorf("recompressions %d: want 0 (one per CPU) or more", o.Recompressions)
	}
	return nil
}

// storedCompression is the compression an upload in uploaded is stored in.
func (o Options) storedCompression(uploaded string) string {
	switch o.StoreCompression {
	case "as-uploaded":
		return uploaded
	case "xz":
		return "xz"
	}
	// zstd (the default): zstd uploads are kept as they are.
	return "zstd"
}

// compressor returns a writer that compresses into w.
func compressor(compression string, w io.Writer, o Options) (io.WriteCloser, error) {
	switch compression {
	case "zstd":
		level := o.ZstdLevel
		if level == 0 {
			level = 3
		}
		conc := o.ZstdConcurrency
		if conc == 0 {
			conc = runtime.GOMAXPROCS(0)
		}
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(conc))
	case "xz":
		return xz.NewWriter(w)
	case "br":
		return brotli.NewWriter(w), nil
	case "none":
		return nopWriteCloser{w}, nil
	}
	return nil, fmt.Errorf("cannot compress to %q", compression)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// SharesBackend reports whether other servers may write to the backend too (replicas on one
// bucket), so that this index may lag behind it.
func (c *Cache) SharesBackend() bool { return c.opts.ReadThrough }
