// Package cache is the domain layer of a Nix binary cache: it verifies uploads while they stream,
// signs and commits narinfos, answers lookups from the index, and rebuilds the index from the
// backend. It knows nothing of HTTP.
//
// Invariants it keeps (see shared/docs/design.md): a narinfo is committed only after its NAR is
// stored and verified; nothing partial is ever visible; the backend is the source of truth.
package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/journal"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// DefaultPriority is the priority a cache announces unless told otherwise (--priority).
const DefaultPriority = 40

// CacheInfo is the body of nix-cache-info, served over HTTP and stored in the backend, for a
// cache of the given priority (0: DefaultPriority).
func CacheInfo(priority int) string {
	if priority == 0 {
		priority = DefaultPriority
	}
	return "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: " + strconv.Itoa(priority) + "\n"
}

// Cache ties a backend, its index and the signing key together.
type Cache struct {
	backend backend.Backend
	index   *index.Index
	keys    signingKeys // sign.go
	log     *slog.Logger
	opts    Options

	// The three kinds of lock below are always taken in this order (commitLocks, narLocks,
	// refMu), at most one of each kind at a time, so that uploads, collection and verification
	// can never deadlock one another (TestUploadsRacingDeletionNeverDeadlock).
	//
	// commitLocks serialise narinfo commits and deletions per store hash (and NAR dedup per
	// NarHash), so that the first complete narinfo wins and concurrent identical uploads all
	// succeed.
	commitLocks [64]sync.Mutex
	// narLocks serialise, per NAR object, a narinfo commit that names it against garbage
	// collection deleting it.
	narLocks [64]sync.Mutex
	// refMu is held shared by narinfo commits (which check their references exist) and
	// exclusively by collection deleting a narinfo (which checks nothing references it).
	refMu sync.RWMutex

	access   accessTracker
	negative negativeCache
	journal  replicaJournal // replica.go

	// recompressing holds a token per NAR being recompressed for its uploaded name: each costs
	// a CPU and an encoder's memory (tens of MiB for xz), and any client may ask.
	recompressing chan struct{}
}

// New returns a cache. It writes nix-cache-info to the backend if it is missing, so that plain
// nix can read the backend directly.
func New(ctx context.Context, b backend.Backend, ix *index.Index, key signing.SecretKey, log *slog.Logger, opts Options) (*Cache, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	n := opts.Recompressions
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	c := &Cache{backend: b, index: ix, log: log, opts: opts, recompressing: make(chan struct{}, n)}
	if err := c.SetSigningKeys([]signing.SecretKey{key}); err != nil {
		return nil, err
	}
	if err := c.writeCacheInfo(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// writeCacheInfo stores nix-cache-info in the backend if it is missing, or, with a priority set,
// if it announces another one.
func (c *Cache) writeCacheInfo(ctx context.Context) error {
	want := CacheInfo(c.opts.Priority)
	obj, err := c.backend.Open(ctx, "nix-cache-info")
	switch {
	case errors.Is(err, backend.ErrNotExist):
	case err != nil:
		return fmt.Errorf("backend unreachable: %w", err)
	default:
		have, err := io.ReadAll(io.LimitReader(obj, 4096))
		obj.Close()
		if err != nil {
			return fmt.Errorf("backend unreachable: reading nix-cache-info: %w", err)
		}
		if c.opts.Priority == 0 || string(have) == want {
			return nil
		}
		c.log.Info("rewriting the backend's nix-cache-info: it announced another priority", "was", string(have), "now", want)
	}
	return c.backend.Save(ctx, "nix-cache-info", bytes.NewReader([]byte(want)))
}

// Backend returns the backend the cache stores into.
func (c *Cache) Backend() backend.Backend { return c.backend }

// NarInfo returns the narinfo served for a store path hash, or ErrNotFound. It reads the index;
// on replicas sharing a backend a miss also looks in the backend (at most once per NegativeTTL
// for a hash), which ctx bounds: misses are the common case for a substituter and must stay
// cheap. The narinfo carries a signature by every current signing key (see signServed).
func (c *Cache) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	text, err := c.index.NarInfo(hash)
	if errors.Is(err, index.ErrNotFound) {
		if err := c.readThrough(ctx, hash); err != nil {
			return nil, err
		}
		text, err = c.index.NarInfo(hash)
		if errors.Is(err, index.ErrNotFound) {
			return nil, ErrNotFound
		}
	}
	if err != nil {
		return nil, err
	}
	return c.signServed(hash, text), nil
}

// HasNarInfo is NarInfo without the copy, for HEAD.
func (c *Cache) HasNarInfo(ctx context.Context, hash string) (bool, error) {
	ok, err := c.index.HasNarInfo(hash)
	if err != nil || ok {
		return ok, err
	}
	if err := c.readThrough(ctx, hash); err != nil {
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// narRecord returns the verified record of a stored NAR. A NAR in the backend that the index
// does not know (after a crash or on a bucket written by plain nix) is verified again by reading
// it back.
func (c *Cache) narRecord(ctx context.Context, nn NarName) (index.NarRecord, error) {
	rec, err := c.index.Nar(nn.Name)
	if err == nil {
		return rec, nil
	}
	if !errors.Is(err, index.ErrNotFound) {
		return rec, err
	}
	obj, err := c.backend.Open(ctx, nn.Name)
	if errors.Is(err, backend.ErrNotExist) {
		return rec, inputErr("URL", "%s was not uploaded (upload the NAR before its narinfo)", nn.Name)
	}
	if err != nil {
		return rec, err
	}
	defer obj.Close()
	res, err := c.ingest(ctx, nn, nn.Compression, obj, nil, func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err })
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			c.log.Error("stored NAR fails verification", "nar", nn.Name, "err", err)
		}
		return rec, err
	}
	rec = res.stored
	if err := c.index.PutNar(nn.Name, rec); err != nil {
		return rec, err
	}
	return rec, c.index.PutNarHash(rec.NarHash, nn.Name)
}

// PutNarInfo verifies an uploaded narinfo for store hash against the NAR it names, signs it and
// commits it. The first complete narinfo for a store path wins: a later different one is not
// stored, and stored reports false.
func (c *Cache) PutNarInfo(ctx context.Context, hash string, text []byte) (stored bool, err error) {
	ni, err := narinfo.Parse(text)
	if err != nil {
		return false, &InputError{Field: "narinfo", Err: err}
	}
	if ni.HashPart() != hash {
		return false, inputErr("StorePath", "%s does not have the hash %s it was uploaded under", ni.StorePath, hash)
	}
	if err := c.checkUploadSigs(ni); err != nil {
		return false, err
	}
	nn, err := ParseNarName(ni.URL)
	if err != nil {
		return false, &InputError{Field: "URL", Err: err}
	}
	if comp := NarInfoCompression(ni); comp != nn.Compression {
		return false, inputErr("Compression", "%q does not match the URL %s", ni.Compression, ni.URL)
	}
	return c.commitNarInfo(ctx, hash, ni, nn, true)
}

// commitNarInfo is PutNarInfo once ni is parsed and its signatures accepted; nn is its URL.
// checkRefs makes every reference have to be served already (uploads); a pulled narinfo's
// references are pulled on demand too.
func (c *Cache) commitNarInfo(ctx context.Context, hash string, ni *narinfo.NarInfo, nn NarName, checkRefs bool) (stored bool, err error) {
	// The NAR may be stored under another name than uploaded (recompressed or deduplicated).
	storedName, uploadedSize, aliased := nn.Name, uint64(0), false
	if a, err := c.alias(ctx, nn.Name); err == nil {
		storedName, uploadedSize, aliased = a.Stored, a.FileSize, true
	} else if !errors.Is(err, index.ErrNotFound) {
		return false, err
	}
	snn, err := ParseNarName(storedName)
	if err != nil {
		return false, fmt.Errorf("alias of %s: %w", nn.Name, err)
	}
	// Lock order, everywhere: commitLocks, then narLocks, then refMu.
	mu := &c.commitLocks[lockSlot(hash)]
	mu.Lock()
	defer mu.Unlock()
	nmu := &c.narLocks[lockSlot(snn.Name)]
	nmu.Lock()
	defer nmu.Unlock()
	rec, err := c.narRecord(ctx, snn)
	if err != nil {
		return false, err
	}
	if got := ni.NarHash.String(); got != rec.NarHash {
		return false, inputErr("NarHash", "narinfo says %s but %s decompresses to a NAR with %s", got, nn.Name, rec.NarHash)
	}
	if ni.NarSize != rec.NarSize {
		return false, inputErr("NarSize", "narinfo says %d but %s decompresses to %d bytes", ni.NarSize, nn.Name, rec.NarSize)
	}
	wantFileHash, wantFileSize := rec.FileHash, rec.FileSize
	if aliased {
		wantFileHash, wantFileSize = "sha256:"+nn.FileHash, uploadedSize
	}
	if !ni.FileHash.IsZero() && ni.FileHash.String() != wantFileHash {
		return false, inputErr("FileHash", "narinfo says %s but %s hashes to %s", ni.FileHash.String(), nn.Name, wantFileHash)
	}
	if ni.FileSize != 0 && ni.FileSize != wantFileSize {
		return false, inputErr("FileSize", "narinfo says %d but %s is %d bytes", ni.FileSize, nn.Name, wantFileSize)
	}
	fh, err := narinfo.ParseHash(rec.FileHash)
	if err != nil {
		return false, fmt.Errorf("index record of %s: %w", snn.Name, err)
	}
	// What is served is what is stored; the signature does not cover these fields.
	ni.URL, ni.Compression, ni.FileHash, ni.FileSize = snn.Name, snn.Compression, fh, rec.FileSize
	c.sign(ni)
	out := ni.Bytes()

	existing, err := c.index.NarInfo(hash)
	if err == nil {
		if !bytes.Equal(c.signServed(hash, existing), out) {
			c.log.Warn("narinfo differs from the one already stored; keeping the first", "hash", hash, "storePath", ni.StorePath)
		}
		return false, nil
	}
	if !errors.Is(err, index.ErrNotFound) {
		return false, err
	}
	// Every reference must be served already (nix uploads references first), and stays so while
	// this commits: collection deletes a narinfo only with refMu held and no referrer left.
	c.refMu.RLock()
	defer c.refMu.RUnlock()
	if checkRefs {
		if err := c.checkReferences(ctx, ni); err != nil {
			return false, err
		}
	}
	name := hash + ".narinfo"
	if err := c.backend.Save(ctx, name, bytes.NewReader(out)); err != nil {
		return false, err
	}
	c.publish(journal.Record{Op: journal.Put, Hash: hash, NarInfo: out}) // committed: tell the replicas
	if err := c.index.CommitNarInfo(hash, out, snn.Name, refHashes(ni)); err != nil {
		return false, &NotIndexedError{Name: name, Err: err}
	}
	if err := c.index.ClearOrphaned(snn.Name); err != nil {
		return false, &NotIndexedError{Name: name, Err: err}
	}
	if err := c.index.SetCreated(hash, time.Now()); err != nil {
		return false, &NotIndexedError{Name: name, Err: err}
	}
	return true, nil
}

// hasReference reports whether the narinfo of a reference is served. On replicas a reference
// uploaded through another one may not be indexed here yet: the backend is asked directly, past
// the negative cache (the uploader's own GET of it, before it was uploaded, was a miss).
func (c *Cache) hasReference(ctx context.Context, hash string) (bool, error) {
	ok, err := c.index.HasNarInfo(hash)
	if ok || err != nil || !c.opts.ReadThrough {
		return ok, err
	}
	return c.indexIfInBackend(ctx, hash)
}

func lockSlot(hash string) int {
	var h uint32
	for i := 0; i < len(hash); i++ {
		h = h*31 + uint32(hash[i])
	}
	return int(h % 64)
}

// Open opens a stored object (NAR, listing, log, realisation) for reading.
func (c *Cache) Open(ctx context.Context, name string) (backend.Object, error) {
	obj, err := c.backend.Open(ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		return nil, ErrNotFound
	}
	return obj, err
}

// PutFile stores an auxiliary object (listing, build log, realisation, debuginfo) as given. The
// caller has validated its name and content.
func (c *Cache) PutFile(ctx context.Context, name string, body io.Reader) error {
	return c.backend.Save(ctx, name, body)
}

// checkReferences checks that every reference of ni is a store path the cache serves, name
// included: one named /nix/store/<hash>-othername, found by its hash alone, would be signed and
// served, then fail in nix ("path ... is not valid"). A reference to ni's own hash must be ni's
// own path. The caller holds refMu.
func (c *Cache) checkReferences(ctx context.Context, ni *narinfo.NarInfo) error {
	self, own := ni.HashPart(), path.Base(ni.StorePath)
	for _, r := range ni.References {
		h, _, err := narinfo.ParseBaseName(r)
		if err != nil {
			return inputErr("References", "%q: %w", r, err)
		}
		if h == self {
			if r != own {
				return inputErr("References", "%s has this path's hash but not its name (%s)", r, own)
			}
			continue
		}
		ok, err := c.hasReference(ctx, h)
		if err != nil {
			return err
		}
		if !ok {
			return inputErr("References", "%s is not in the cache: upload the references of %s first", r, ni.StorePath)
		}
		text, err := c.index.NarInfo(h)
		if err != nil {
			return fmt.Errorf("narinfo of reference %s: %w", r, err)
		}
		ref, err := narinfo.Parse(text)
		if err != nil {
			return fmt.Errorf("indexed narinfo of reference %s: %w", r, err)
		}
		if held := path.Base(ref.StorePath); held != r {
			return inputErr("References", "%s is not in the cache: it holds %s under that hash", r, held)
		}
	}
	return nil
}

// refHashes returns the store hashes a narinfo references, itself excluded.
func refHashes(ni *narinfo.NarInfo) []string {
	self := ni.HashPart()
	var out []string
	for _, r := range ni.References {
		if h, _, err := narinfo.ParseBaseName(r); err == nil && h != self {
			out = append(out, h)
		}
	}
	return out
}

// checkUploadSigs enforces --require-upload-sigs.
func (c *Cache) checkUploadSigs(ni *narinfo.NarInfo) error {
	if len(c.opts.UploadKeys) == 0 {
		return nil
	}
	fp := ni.Fingerprint()
	for _, sig := range ni.Sigs {
		for _, k := range c.opts.UploadKeys {
			if k.Verify(fp, sig) {
				return nil
			}
		}
	}
	names := make([]string, len(c.opts.UploadKeys))
	for i, k := range c.opts.UploadKeys {
		names[i] = k.Name
	}
	if len(ni.Sigs) == 0 {
		return inputErr("Sig", "%s is unsigned; uploads must be signed by one of %v", ni.StorePath, names)
	}
	return inputErr("Sig", "no signature of %s verifies with any of %v", ni.StorePath, names)
}

// PingIndex checks that the index itself answers (for readiness probes).
func (c *Cache) PingIndex() error { return c.index.Ping() }
