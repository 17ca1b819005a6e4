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
	in := newIngestion(c, nn, target, want)
	defer in.close()
	pr, pw := io.Pipe()
	prodErr := make(chan error, 1)
	go func() {
		err := in.produce(ctx, body, pw)
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
	return in.result(), nil
}

// ingestion is one pass of ingest over an upload: what it hashes and measures.
type ingestion struct {
	c      *Cache
	nn     NarName
	target string
	want   *NarWant
	// The hashes run on goroutines of their own, beside the decompression (asynchash.go).
	uploaded   *asyncHash // the uploaded bytes
	narH       *asyncHash // the NAR
	storedHash *asyncHash // the recompressed bytes; nil when the upload is kept as it is
	narSize    int64
}

func newIngestion(c *Cache, nn NarName, target string, want *NarWant) *ingestion {
	in := &ingestion{c: c, nn: nn, target: target, want: want,
		uploaded: newAsyncHash(sha256.New()), narH: newAsyncHash(sha256.New())}
	if in.transcode() {
		in.storedHash = newAsyncHash(sha256.New())
	}
	return in
}

func (in *ingestion) transcode() bool { return in.target != in.nn.Compression }

func (in *ingestion) close() {
	if in.storedHash != nil {
		in.storedHash.Close()
	}
	in.narH.Close()
	in.uploaded.Close()
}

// produce reads body once and writes the bytes to keep to pw: it hashes the upload, checks the
// NAR inside it and recompresses it if asked to, then checks the hashes.
func (in *ingestion) produce(ctx context.Context, body io.Reader, pw io.Writer) error {
	nn := in.nn
	// The uploaded bytes are hashed, and kept as they are unless they are recompressed.
	kept := io.MultiWriter(in.uploaded, pw)
	var enc io.WriteCloser
	if in.transcode() {
		kept = in.uploaded
		var err error
		enc, err = compressor(in.target, io.MultiWriter(in.storedHash, pw), in.c.opts)
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
	if err := in.checkNar(ctx, src, enc); err != nil {
		return err
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
	return in.checkHashes()
}

// checkNar decompresses src, checks that it is one valid NAR and that the compressed stream
// ends properly right after it, and hashes the NAR (and recompresses it into enc, if not nil).
func (in *ingestion) checkNar(ctx context.Context, src io.Reader, enc io.Writer) error {
	nn, opts := in.nn, in.c.opts
	// The decoder's memory comes out of the budget shared by concurrent uploads.
	mem := opts.DecoderMemory.Reserve()
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
	sink := io.Writer(in.narH)
	if enc != nil {
		sink = io.MultiWriter(in.narH, enc)
	}
	narIn := io.Reader(dec)
	if opts.MaxNarSize > 0 {
		narIn = &narLimit{r: dec, left: opts.MaxNarSize, limit: opts.MaxNarSize}
	}
	in.narSize, err = nar.Check(io.TeeReader(narIn, sink))
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
	return nil
}

// checkHashes checks the upload's hash against its name, and the NAR against want.
func (in *ingestion) checkHashes() error {
	nn, want := in.nn, in.want
	if got := nixbase32.EncodeToString(in.uploaded.Sum()); got != nn.FileHash {
		return inputErr("FileHash", "uploaded bytes of %s hash to sha256:%s, not to the hash in its name", nn.Name, got)
	}
	if want != nil {
		if uint64(in.narSize) != want.NarSize {
			return inputErr("NarSize", "%s decompresses to %d bytes, not the %d its narinfo says", nn.Name, in.narSize, want.NarSize)
		}
		if got := "sha256:" + nixbase32.EncodeToString(in.narH.Sum()); got != want.NarHash {
			return inputErr("NarHash", "%s decompresses to a NAR with %s, not the %s its narinfo says", nn.Name, got, want.NarHash)
		}
	}
	return nil
}

// result is what a pass that verified measured.
func (in *ingestion) result() ingestResult {
	res := ingestResult{uploadedSize: uint64(in.uploaded.n), compression: in.target}
	res.stored.NarHash = "sha256:" + nixbase32.EncodeToString(in.narH.Sum())
	res.stored.NarSize = uint64(in.narSize)
	if in.storedHash != nil {
		res.stored.FileHash = "sha256:" + nixbase32.EncodeToString(in.storedHash.Sum())
		res.stored.FileSize = uint64(in.storedHash.n)
	} else {
		res.stored.FileHash = "sha256:" + in.nn.FileHash
		res.stored.FileSize = uint64(in.uploaded.n)
	}
	return res
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
