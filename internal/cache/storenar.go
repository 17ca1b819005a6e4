package cache

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Servers that serve a Nix store directly (nix-serve, harmonia) name a NAR by its store path, not
// by its file, and send it uncompressed: nix-serve's narinfos say "URL: nar/<store hash>-<NarHash
// in nix32>.nar" (and its first versions "nar/<store hash>.nar"), harmonia's "URL:
// nar/<NarHash>.nar?hash=<store hash>", with "Compression: none". A client keeps the narinfos it
// has seen for a month, so when cached takes over such a server's address, clients ask it for
// these URLs; cached answers them with the NAR of that store path, decompressed.

// StoreNarRef names a NAR by the store path it is the archive of.
type StoreNarRef struct {
	StoreHash string // the 32 characters of the store path's hash
	// NarHash is the nix32 sha256 the client expects the NAR to have (52 characters); empty when
	// the URL does not say. A path uploaded again since may have another.
	NarHash string
}

// ParseStoreNarName parses the NAR names of nix-serve: "nar/<store hash>-<NarHash>.nar" and
// "nar/<store hash>.nar". The error names the offending part.
func ParseStoreNarName(name string) (StoreNarRef, error) {
	rest, ok := strings.CutPrefix(name, "nar/")
	if !ok {
		return StoreNarRef{}, fmt.Errorf("NAR name %q does not start with nar/", truncate(name))
	}
	rest, ok = strings.CutSuffix(rest, ".nar")
	if !ok {
		return StoreNarRef{}, fmt.Errorf("NAR name %q does not end in .nar", truncate(name))
	}
	storeHash, narHash, withNarHash := strings.Cut(rest, "-")
	if !ValidStoreHash(storeHash) {
		return StoreNarRef{}, fmt.Errorf("NAR name %q: %q is not a store path hash", truncate(name), truncate(storeHash))
	}
	if withNarHash && !validNix32SHA256(narHash) {
		return StoreNarRef{}, fmt.Errorf("NAR name %q: %q is not a sha256 hash in Nix base-32", truncate(name), truncate(narHash))
	}
	return StoreNarRef{StoreHash: storeHash, NarHash: narHash}, nil
}

// ParseStoreNarQuery parses harmonia's NAR URLs, "nar/<NarHash>.nar?hash=<store hash>": narName
// is the path ("nar/<NarHash>.nar", a NAR name ParseNarName accepts with compression "none") and
// storeHash the query's hash.
func ParseStoreNarQuery(narName, storeHash string) (StoreNarRef, error) {
	nn, err := ParseNarName(narName)
	if err != nil {
		return StoreNarRef{}, err
	}
	if nn.Compression != "none" {
		return StoreNarRef{}, fmt.Errorf("NAR name %q: a store path's NAR (hash=%s) is uncompressed, named .nar", truncate(narName), truncate(storeHash))
	}
	if !ValidStoreHash(storeHash) {
		return StoreNarRef{}, fmt.Errorf("hash=%q is not a store path hash", truncate(storeHash))
	}
	return StoreNarRef{StoreHash: storeHash, NarHash: nn.FileHash}, nil
}

func validNix32SHA256(s string) bool { return len(s) == 52 && nixbase32.ValidateString(s) == nil }

// NarHashMismatchError means a store path is here, but its NAR is not the one the client asked
// for: the path was uploaded again since the client read its narinfo. It is an ErrNotFound.
type NarHashMismatchError struct {
	StoreHash string
	Want      string // the nix32 NarHash the URL names
	Have      string // the stored path's NarHash, "sha256:<nix32>"
}

func (e *NarHashMismatchError) Error() string {
	return fmt.Sprintf("store path %s has NarHash %s here, not the sha256:%s the URL names (it was uploaded again: read its narinfo again)", e.StoreHash, e.Have, e.Want)
}

func (e *NarHashMismatchError) Is(target error) bool { return target == ErrNotFound }

// StoreNar is the NAR of a store path, uncompressed. Exactly one of Object and Body is set:
// Object when the cache stores that NAR uncompressed (it can be sent as it is, with Range), Body
// when it is decompressed on the fly. Close releases it.
type StoreNar struct {
	NarHash string // "sha256:<nix32>"
	Size    int64  // NarSize: the length of what Object or Body holds
	Stored  string // the object it comes from, "nar/<filehash>.nar.<ext>"
	Object  backend.Object
	Body    io.ReadCloser
}

func (n *StoreNar) Close() error {
	if n.Object != nil {
		return n.Object.Close()
	}
	return n.Body.Close()
}

// OpenStoreNar opens the NAR of the store path ref names, uncompressed. It returns ErrNotFound
// when the cache does not have the path, or a *NarHashMismatchError when it has another NAR for
// it than the one ref expects. Decompressing takes one of the slots that recompression for
// uploaded names takes (it waits for one until ctx ends): any client may ask, and an xz NAR
// costs a CPU while it streams.
func (c *Cache) OpenStoreNar(ctx context.Context, ref StoreNarRef) (*StoreNar, error) {
	text, err := c.NarInfo(ctx, ref.StoreHash)
	if err != nil {
		return nil, err
	}
	ni, err := narinfo.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("narinfo of %s: %w", ref.StoreHash, err)
	}
	have := nixbase32.EncodeToString(ni.NarHash.Digest)
	if ref.NarHash != "" && (ni.NarHash.Algo != "sha256" || have != ref.NarHash) {
		return nil, &NarHashMismatchError{StoreHash: ref.StoreHash, Want: ref.NarHash, Have: ni.NarHash.String()}
	}
	nn, err := ParseNarName(ni.URL)
	if err != nil {
		return nil, fmt.Errorf("narinfo of %s: URL: %w", ref.StoreHash, err)
	}
	n := &StoreNar{NarHash: ni.NarHash.String(), Size: int64(ni.NarSize), Stored: nn.Name}
	if nn.Compression == "none" {
		if n.Object, err = c.Open(ctx, nn.Name); err != nil {
			return nil, err
		}
		return n, nil
	}
	select {
	case c.recompressing <- struct{}{}:
	default:
		c.log.Info("waiting to decompress a NAR for its store path URL: all recompression slots are busy", "store_hash", ref.StoreHash, "slots", cap(c.recompressing))
		select {
		case c.recompressing <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	obj, err := c.Open(ctx, nn.Name)
	if err != nil {
		<-c.recompressing
		return nil, err
	}
	dec, err := decompressor(nn.Compression, obj)
	if err != nil {
		obj.Close()
		<-c.recompressing
		return nil, fmt.Errorf("%s: %w", nn.Name, err)
	}
	n.Body = &releasingReader{ReadCloser: dec, obj: obj, release: func() { <-c.recompressing }}
	return n, nil
}

// releasingReader closes the decompressor, then the object under it, and gives back its slot,
// once.
type releasingReader struct {
	io.ReadCloser
	obj     io.Closer
	release func()
}

func (r *releasingReader) Close() error {
	if r.release == nil {
		return nil
	}
	err := r.ReadCloser.Close()
	if cerr := r.obj.Close(); err == nil {
		err = cerr
	}
	r.release()
	r.release = nil
	return err
}
