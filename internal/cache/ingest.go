package cache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// ingestResult is what one pass over an uploaded NAR file measured.
type ingestResult struct {
	uploadedSize uint64          // bytes of the file as uploaded
	stored       index.NarRecord // the NAR and the file as stored
	compression  string          // compression of the stored file
}

// ingestBuffer is how much of an upload is read at a time: the decompressors ask for a few
// bytes at a time between blocks, and each read of the body would otherwise be one write to the
// stored file and one hand-over between goroutines.
const ingestBuffer = 256 << 10

// ingest streams an uploaded NAR file (named by nn, in nn.Compression) once: it hashes the
// uploaded bytes, decompresses and validates the NAR while hashing it, and, when target differs
// from the upload's compression, recompresses it. store receives the bytes to keep (the upload
// itself, or the recompressed file); the stream it reads fails instead of ending if anything
// does not verify, so a backend's Save never commits refused content. A non-nil want is what the
// NAR must be (its NarHash and NarSize, from a narinfo fetched before the NAR), checked before
// the stream ends.
func (c *Cache) ingest(ctx context.Context, nn NarName, target string, body io.Reader, want *NarWant, store func(io.Reader) error) (ingestResult, error) {
	pr, pw := io.Pipe()
	// The hashes run on goroutines of their own, beside the decompression (asynchash.go).
	uploaded := newAsyncHash(sha256.New())
	defer uploaded.Close()
	narH := newAsyncHash(sha256.New())
	defer narH.Close()
	transcode := target != nn.Compression
	var storedHash *asyncHash
	if transcode {
		storedHash = newAsyncHash(sha256.New())
		defer storedHash.Close()
	}
	var narSize int64

	produce := func() error {
		// The uploaded bytes are hashed, and kept as they are unless they are recompressed.
		kept := io.MultiWriter(uploaded, pw)
		var enc io.WriteCloser
		if transcode {
			kept = uploaded
			var err error
			enc, err = compressor(target, io.MultiWriter(storedHash, pw), c.opts)
			if err != nil {
				return err
			}
			// zstd encodes on goroutines of its own that write to storedHash: even when the
			// upload is refused part-way, they must be done before storedHash is closed.
			defer func() {
				if enc != nil {
					enc.Close()
				}
			}()
		}
		src := bufio.NewReaderSize(io.TeeReader(body, kept), ingestBuffer)
		// The decoder's memory comes out of the budget shared by concurrent uploads.
		mem := c.opts.DecoderMemory.Reserve()
		defer mem.Release()
		need := func(n int64) error { return mem.Need(ctx, n) }
		dec, err := NewDecoder(nn.Compression, src, MaxNarWindow, need)
		if lerr := limitErr(err); lerr != nil {
			return fmt.Errorf("%s: %w", nn.Name, lerr)
		}
		if err != nil {
			return inputErr("Compression", "%s: %w", nn.Name, err)
		}
		defer dec.Close()
		sink := io.Writer(narH)
		if enc != nil {
			sink = io.MultiWriter(narH, enc)
		}
		narIn := io.Reader(dec)
		if c.opts.MaxNarSize > 0 {
			narIn = &narLimit{r: dec, left: c.opts.MaxNarSize, limit: c.opts.MaxNarSize}
		}
		narSize, err = nar.Check(io.TeeReader(narIn, sink))
		if lerr := limitErr(err); lerr != nil {
			return fmt.Errorf("%s: %w", nn.Name, lerr)
		}
		if err != nil {
			// Wrapped, so that a body over the size limit or a stalled one still reads as that.
			return inputErr("NAR", "%s is not a valid %s-compressed NAR: %w", nn.Name, nn.Compression, err)
		}
		// The compressed stream must end properly (its checksums and trailer) right after the
		// NAR: a stored file that nix cannot decompress to its end is a broken path.
		var one [1]byte
		switch m, err := io.ReadFull(dec, one[:]); {
		case m > 0:
			return inputErr("NAR", "%s: data after the end of the NAR", nn.Name)
		case err != io.EOF:
			return inputErr("NAR", "%s: the %s stream is damaged after the NAR: %w", nn.Name, nn.Compression, err)
		}
		// Whatever follows the compressed stream is covered by the file hash.
		if _, err := io.Copy(io.Discard, src); err != nil {
			return err
		}
		if enc != nil {
			err := enc.Close()
			enc = nil
			if err != nil {
				return fmt.Errorf("recompress %s: %w", nn.Name, err)
			}
		}
		if got := nixbase32.EncodeToString(uploaded.Sum()); got != nn.FileHash {
			return inputErr("FileHash", "uploaded bytes of %s hash to sha256:%s, not to the hash in its name", nn.Name, got)
		}
		if want != nil {
			if uint64(narSize) != want.NarSize {
				return inputErr("NarSize", "%s decompresses to %d bytes, not the %d its narinfo says", nn.Name, narSize, want.NarSize)
			}
			if got := "sha256:" + nixbase32.EncodeToString(narH.Sum()); got != want.NarHash {
				return inputErr("NarHash", "%s decompresses to a NAR with %s, not the %s its narinfo says", nn.Name, got, want.NarHash)
			}
		}
		return nil
	}
	prodErr := make(chan error, 1)
	go func() {
		err := produce()
		if err == nil && want != nil && want.Verified != nil {
			want.Verified()
		}
		pw.CloseWithError(err) // nil closes with EOF: the stream ends only if everything verified
		prodErr <- err
	}()
	storeErr := store(pr)
	pr.CloseWithError(errStoreStopped) // unblock the producer if store gave up
	perr := <-prodErr
	switch {
	case storeErr != nil && errors.Is(perr, errStoreStopped):
		// The storage failed (a full disk, an S3 outage) and the producer only saw the pipe
		// close: the upload was not at fault, and the answer must say so (5xx, which nix
		// retries), not blame the NAR.
		return ingestResult{}, fmt.Errorf("storing %s: %w", nn.Name, storeErr)
	case perr != nil:
		// The producer's error says why (a refusal, a stalled or oversized body), even when the
		// request's context has been cancelled since.
		return ingestResult{}, perr
	case storeErr != nil:
		return ingestResult{}, storeErr
	}
	res := ingestResult{uploadedSize: uint64(uploaded.n), compression: target}
	res.stored.NarHash = "sha256:" + nixbase32.EncodeToString(narH.Sum())
	res.stored.NarSize = uint64(narSize)
	if transcode {
		res.stored.FileHash = "sha256:" + nixbase32.EncodeToString(storedHash.Sum())
		res.stored.FileSize = uint64(storedHash.n)
	} else {
		res.stored.FileHash = "sha256:" + nn.FileHash
		res.stored.FileSize = uint64(uploaded.n)
	}
	return res, nil
}

// limitErr is the limit an upload ran into, found in err: the decompressed size
// (*NarTooLargeError) or the decoder memory budget (*membudget.BusyError, TooLargeError). Not a
// fault of the NAR: the answer names the limit, not the NAR.
func limitErr(err error) error {
	var (
		tooLarge *NarTooLargeError
		busy     *membudget.BusyError
		never    *membudget.TooLargeError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return tooLarge
	case errors.As(err, &busy):
		return busy
	case errors.As(err, &never):
		return never
	}
	return nil
}

// errStoreStopped ends the pipe to the store when the store gave up reading it.
var errStoreStopped = errors.New("store stopped reading")

// CheckNar reads a stored NAR object (named by nn) back through the checks an upload passes,
// storing nothing, and returns what it measured. Content that fails them is an *InputError.
func (c *Cache) CheckNar(ctx context.Context, nn NarName, r io.Reader) (index.NarRecord, error) {
	res, err := c.ingest(ctx, nn, nn.Compression, r, nil, func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err })
	return res.stored, err
}
