package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/cached-dev/cached/internal/nar"
	"github.com/cached-dev/cached/internal/narinfo"
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

// PutNar stores an uploaded NAR file named name ("nar/<filehash>.nar.<ext>") after verifying,
// while it streams, that its bytes hash to the file hash in the name and that it decompresses to
// one valid NAR; it is recompressed to the configured store compression on the way. A NAR whose
// NarHash is already stored is kept only once. When the stored name differs from the uploaded
// one, the uploaded name becomes an alias that the following narinfo PUT resolves.
func (c *Cache) PutNar(ctx context.Context, name string, body io.Reader) (index.NarRecord, error) {
	nn, err := ParseNarName(name)
	if err != nil {
		return index.NarRecord{}, &InputError{Field: "URL", Err: err}
	}
	return c.putNar(ctx, nn, c.opts.storedCompression(nn.Compression), body, nil)
}

// NarWant is what a NAR must decompress to: sha256:<nix32> and its size.
type NarWant struct {
	NarHash string
	NarSize uint64
	// Verified, if not nil, is called as soon as every byte of the file has been read and
	// verified, before it is stored durably and committed.
	Verified func()
}

// putNar is PutNar storing in target compression, the NAR checked against want if not nil.
func (c *Cache) putNar(ctx context.Context, nn NarName, target string, body io.Reader, want *NarWant) (index.NarRecord, error) {
	name := nn.Name
	// Uploads land under a staging name: the stored name depends on the hash of the recompressed
	// bytes, known only at the end, and a NAR that is already stored must not be stored twice.
	var rnd [12]byte
	rand.Read(rnd[:])
	saveAs := StagingPrefix + hex.EncodeToString(rnd[:])
	res, err := c.ingest(ctx, nn, target, body, want, func(r io.Reader) error { return c.backend.Save(ctx, saveAs, r) })
	if err != nil {
		return index.NarRecord{}, err
	}
	fh, err := narinfo.ParseHash(res.stored.FileHash)
	if err != nil {
		return index.NarRecord{}, err
	}
	storedName := NarObjectName(fh, target)

	mu := &c.commitLocks[lockSlot(res.stored.NarHash)]
	mu.Lock()
	defer mu.Unlock()
	if existing, err := c.index.NarByHash(res.stored.NarHash); err == nil {
		// The same NAR may already be stored (perhaps in another compression): keep that one.
		rec, reused, err := c.reuseNar(ctx, existing, name, res.uploadedSize)
		if err != nil {
			return index.NarRecord{}, err
		}
		if reused {
			if err := c.backend.Remove(ctx, saveAs); err != nil && !errors.Is(err, backend.ErrNotExist) {
				c.log.Warn("removing duplicate upload", "object", saveAs, "err", err)
			}
			return rec, nil
		}
	}
	if err := c.commitNar(ctx, saveAs, storedName, name, res); err != nil {
		return index.NarRecord{}, err
	}
	return res.stored, nil
}

// reuseNar answers an upload with the stored NAR existing that has the same NarHash, if it is
// still there, restarting its grace period so that garbage collection leaves it for the narinfo
// to come. Everything runs under the NAR's lock, so a collection cannot remove it in between.
func (c *Cache) reuseNar(ctx context.Context, existing, uploaded string, uploadedSize uint64) (index.NarRecord, bool, error) {
	nmu := &c.narLocks[lockSlot(existing)]
	nmu.Lock()
	defer nmu.Unlock()
	if !c.narPresent(ctx, existing) {
		return index.NarRecord{}, false, nil
	}
	rec, err := c.index.Nar(existing)
	if err != nil {
		return index.NarRecord{}, false, err
	}
	if err := c.refreshOrphan(ctx, existing); err != nil {
		return index.NarRecord{}, false, err
	}
	return rec, true, c.aliasIfRenamed(ctx, uploaded, existing, uploadedSize)
}

// commitNar moves a verified staged upload to its stored name and records it (and the uploaded
// name as its alias), under the NAR's lock so that a collection deleting an older object of the
// same name cannot interleave.
func (c *Cache) commitNar(ctx context.Context, staged, name, uploaded string, res ingestResult) error {
	nmu := &c.narLocks[lockSlot(name)]
	nmu.Lock()
	defer nmu.Unlock()
	if err := c.move(ctx, staged, name); err != nil {
		return err
	}
	if err := c.index.PutNar(name, res.stored); err != nil {
		return err
	}
	if err := c.index.PutNarHash(res.stored.NarHash, name); err != nil {
		return err
	}
	// A fresh upload starts its grace period now, whatever an older copy's mark said.
	if err := c.refreshOrphan(ctx, name); err != nil {
		return err
	}
	return c.aliasIfRenamed(ctx, uploaded, name, res.uploadedSize)
}

// aliasIfRenamed records that the NAR uploaded as uploaded is stored as stored, for the narinfo
// PUT that names the uploaded URL. Replicas sharing a backend also write it there (AliasPrefix):
// behind a load balancer, the narinfo PUT may reach another replica than its NAR did.
func (c *Cache) aliasIfRenamed(ctx context.Context, uploaded, stored string, uploadedSize uint64) error {
	if uploaded == stored {
		return nil
	}
	a := index.AliasRecord{Stored: stored, FileSize: uploadedSize}
	if c.opts.ReadThrough {
		body, err := json.Marshal(a)
		if err != nil {
			return err
		}
		if err := c.backend.Save(ctx, AliasPrefix+uploaded, bytes.NewReader(body)); err != nil {
			return fmt.Errorf("save alias of %s: %w", uploaded, err)
		}
	}
	return c.index.PutAlias(uploaded, a)
}

// AliasPrefix is where replicas sharing a backend record the NARs they store under another name
// than uploaded: AliasPrefix + "nar/<filehash>.nar.xz" holds the index.AliasRecord as JSON.
// Plain nix never reads it.
const AliasPrefix = "alias/"

// alias resolves an uploaded NAR name that the NAR is stored under another name for: from the
// index, or, on replicas, from the backend (written by the replica that took the upload).
func (c *Cache) alias(ctx context.Context, uploaded string) (index.AliasRecord, error) {
	a, err := c.index.Alias(uploaded)
	if !c.opts.ReadThrough || !errors.Is(err, index.ErrNotFound) {
		return a, err
	}
	obj, err := c.backend.Open(ctx, AliasPrefix+uploaded)
	if errors.Is(err, backend.ErrNotExist) {
		return a, index.ErrNotFound
	}
	if err != nil {
		return a, err
	}
	defer obj.Close()
	body, err := io.ReadAll(io.LimitReader(obj, 4096))
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return a, fmt.Errorf("alias of %s in the backend: %w", uploaded, err)
	}
	if _, err := ParseNarName(a.Stored); err != nil {
		return a, fmt.Errorf("alias of %s in the backend: %w", uploaded, err)
	}
	return a, c.index.PutAlias(uploaded, a)
}

// forgetAliasesTo drops every alias of a NAR object that is being deleted, from the index and,
// on replicas, from the backend.
func (c *Cache) forgetAliasesTo(ctx context.Context, stored string) error {
	names, err := c.index.DeleteAliasesTo(stored)
	if err != nil || !c.opts.ReadThrough {
		return err
	}
	for _, n := range names {
		if err := c.backend.Remove(ctx, AliasPrefix+n); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return fmt.Errorf("delete alias of %s: %w", n, err)
		}
	}
	return nil
}

// refreshOrphan starts the grace period of a NAR that was just uploaded (again) anew, so that
// garbage collection leaves it for the narinfo to come: it marks it orphaned as of now, unless a
// narinfo already references it. Left unmarked, an old object that an upload was deduplicated
// onto would be marked by the next collection as orphaned since its modification time, its grace
// period already over, and deleted before the narinfo arrived.
func (c *Cache) refreshOrphan(ctx context.Context, name string) error {
	if _, err := c.index.Orphaned(name); err == nil {
		if err := c.index.ClearOrphaned(name); err != nil {
			return err
		}
	} else if ref, err := c.index.NarReferenced(name); err != nil || ref {
		return err
	}
	return c.index.SetOrphaned(name, time.Now())
}

// narPresent reports whether a NAR object is both recorded in the index and in the backend.
func (c *Cache) narPresent(ctx context.Context, name string) bool {
	ok, err := c.narStored(ctx, name)
	return ok && err == nil
}

// narStored is narPresent that tells absence (false) from an index or backend that cannot answer
// (an error).
func (c *Cache) narStored(ctx context.Context, name string) (bool, error) {
	if _, err := c.index.Nar(name); errors.Is(err, index.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	_, err := c.backend.Stat(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// StagingPrefix is where uploads wait until they are verified and named.
const StagingPrefix = "staging/"

// CleanStaging removes staged uploads older than olderThan, left by a process that died.
func (c *Cache) CleanStaging(ctx context.Context, olderThan time.Duration) (int, error) {
	var stale []string
	err := c.backend.List(ctx, StagingPrefix, func(fi backend.FileInfo) error {
		if time.Since(fi.ModTime) > olderThan {
			stale = append(stale, fi.Name)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range stale {
		if err := c.backend.Remove(ctx, name); err == nil {
			n++
		}
	}
	return n, nil
}

// RemoveLeftovers removes what writes that never finished left behind: staged uploads older than
// stagingAge, and every temporary file of a backend that has them (disk). Only for start-up,
// once the index lock is held: no write of this cache can be in flight then. It returns what it
// removed.
func (c *Cache) RemoveLeftovers(ctx context.Context, stagingAge time.Duration) ([]backend.FileInfo, error) {
	var left []backend.FileInfo
	err := c.backend.List(ctx, StagingPrefix, func(fi backend.FileInfo) error {
		if time.Since(fi.ModTime) >= stagingAge {
			left = append(left, fi)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var removed []backend.FileInfo
	for _, fi := range left {
		if err := c.backend.Remove(ctx, fi.Name); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return removed, fmt.Errorf("remove %s: %w", fi.Name, err)
		}
		removed = append(removed, fi)
	}
	temps, ok := c.backend.(backend.Temps)
	if !ok {
		return removed, nil
	}
	files, err := temps.Temps(ctx)
	if err != nil {
		return removed, err
	}
	for _, fi := range files {
		if err := temps.RemoveTemp(ctx, fi.Name); err != nil {
			return removed, fmt.Errorf("remove %s: %w", fi.Name, err)
		}
		removed = append(removed, fi)
	}
	return removed, nil
}

// move renames an object, through the backend's Mover if it has one.
func (c *Cache) move(ctx context.Context, from, to string) error {
	return backend.Move(ctx, c.backend, from, to)
}

// UploadStored reports whether an uploaded NAR name resolves (as an alias) to a NAR that is
// stored, and the size of the file as it was uploaded. The HEAD nix sends before each upload uses
// it: a NAR stored recompressed need not be uploaded again by a parallel job or a retry.
// A name that is no such upload is ErrNotFound; an index or backend that cannot answer is
// another error.
func (c *Cache) UploadStored(ctx context.Context, name string) (int64, error) {
	a, err := c.alias(ctx, name)
	if errors.Is(err, index.ErrNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	if ok, err := c.narStored(ctx, a.Stored); err != nil {
		return 0, err
	} else if !ok {
		return 0, ErrNotFound
	}
	return int64(a.FileSize), nil
}

// OpenUploaded serves a NAR under the name it was uploaded as when the server stores it in
// another compression: the stored file is decompressed and compressed again on the fly. Only a
// client holding the narinfo it uploaded (nix caches it on the uploading machine) asks for that
// name; it checks the NarHash, which recompression keeps. Slow (xz), so never the normal path.
func (c *Cache) OpenUploaded(ctx context.Context, name string) (io.ReadCloser, error) {
	nn, err := ParseNarName(name)
	if err != nil {
		return nil, err
	}
	a, err := c.alias(ctx, name)
	if errors.Is(err, index.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	snn, err := ParseNarName(a.Stored)
	if err != nil {
		return nil, fmt.Errorf("alias of %s: %w", name, err)
	}
	if nn.Compression == "bzip2" { // no bzip2 encoder in Go
		return nil, ErrNotFound
	}
	select {
	case c.recompressing <- struct{}{}:
	default:
		c.log.Info("waiting to recompress a NAR for its uploaded name: all recompression slots are busy", "nar", name, "slots", cap(c.recompressing))
		select {
		case c.recompressing <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	release := func() { <-c.recompressing }
	obj, err := c.Open(ctx, snn.Name)
	if err != nil {
		release()
		return nil, err
	}
	dec, err := decompressor(snn.Compression, obj)
	if err != nil {
		obj.Close()
		release()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer release()
		defer obj.Close()
		defer dec.Close()
		enc, err := compressor(nn.Compression, pw, c.opts)
		if err == nil {
			_, err = io.Copy(enc, dec)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	c.log.Info("serving a NAR under its uploaded name by recompression (a client holds the narinfo it uploaded)", "nar", name, "stored", snn.Name)
	return pr, nil
}
