package cache

import (
	"context"
	"fmt"
	"io"

	"github.com/cached-dev/cached/internal/narinfo"
)

// Pull-through (package upstream) fetches what the cache lacks from another cache. Its narinfos
// are trusted because their signatures verify with an upstream key, which the caller checks; the
// cache then treats a pulled path as an upload that skips two checks: upload signatures
// (--require-upload-sigs is about builders) and references (a pulled path's references are
// pulled on demand, when a client asks for them). Its NAR is verified and committed as an
// upload's is, then its narinfo.

// PrepPulled rewrites ni, a narinfo an upstream serves, into the one this cache serves for it
// before its NAR is stored, and returns the name the NAR will be stored under. URL becomes that
// name (nar/<filehash>.nar<ext>, kept in the upstream's compression so that the narinfo handed
// out stays valid once the NAR is stored), and every current key signs it beside the upstream's
// signatures. It refuses, with an InputError, a narinfo whose NAR could not be stored by name: a
// compressed NAR without a FileHash, a file hash that is not sha256, a compression it does not
// know.
func (c *Cache) PrepPulled(ni *narinfo.NarInfo) (NarName, error) {
	comp := NarInfoCompression(ni)
	if _, ok := compressionExt[comp]; !ok {
		return NarName{}, inputErr("Compression", "%q of %s is not one this cache can store", ni.Compression, ni.StorePath)
	}
	if ni.FileHash.IsZero() && comp == "none" {
		ni.FileHash, ni.FileSize = ni.NarHash, ni.NarSize
	}
	if ni.FileHash.IsZero() {
		return NarName{}, inputErr("FileHash", "%s has none: its %s NAR cannot be stored by name", ni.StorePath, comp)
	}
	if ni.FileHash.Algo != "sha256" {
		return NarName{}, inputErr("FileHash", "%s of %s is not sha256", ni.FileHash.String(), ni.StorePath)
	}
	if ni.NarHash.Algo != "sha256" {
		return NarName{}, inputErr("NarHash", "%s of %s is not sha256", ni.NarHash.String(), ni.StorePath)
	}
	name := NarObjectName(ni.FileHash, comp)
	nn, err := ParseNarName(name)
	if err != nil {
		return NarName{}, fmt.Errorf("pulled narinfo of %s: %w", ni.StorePath, err)
	}
	ni.URL, ni.Compression = name, comp
	c.sign(ni)
	return nn, nil
}

// PutPulled stores the NAR of ni, a narinfo PrepPulled prepared, read from body, verifying as it
// streams that it hashes to ni's FileHash and decompresses to its NarHash and NarSize; then it
// commits ni, as PutNar and PutNarInfo do for an upload. A nil body means the NAR is stored
// already. Nothing is committed unless everything verifies; a refusal is an InputError. stored is
// false when a narinfo for the path was committed first. verified, if not nil, is called as soon
// as the NAR has verified, before it is stored durably and committed: what was read of body is
// then known good.
func (c *Cache) PutPulled(ctx context.Context, ni *narinfo.NarInfo, body io.Reader, verified func()) (stored bool, err error) {
	nn, err := ParseNarName(ni.URL)
	if err != nil {
		return false, &InputError{Field: "URL", Err: err}
	}
	if body != nil {
		want := &NarWant{NarHash: ni.NarHash.String(), NarSize: ni.NarSize, Verified: verified}
		if _, err := c.putNar(ctx, nn, nn.Compression, body, want); err != nil {
			return false, err
		}
	}
	stored, err = c.commitNarInfo(ctx, ni.HashPart(), ni, nn, false)
	if err != nil || !stored {
		return stored, err
	}
	// Marked for the pulled-hits metric and gc --pulled-only; a lost mark costs only those.
	marks := []string{ni.HashPart()}
	if body != nil {
		marks = append(marks, ni.URL) // the stored object's name, set by the commit
	}
	if err := c.index.MarkPulled(marks...); err != nil {
		c.log.Warn("marking a pulled path", "storePath", ni.StorePath, "err", err)
	}
	return true, nil
}

// HasNarObject reports whether the NAR object name is stored and verified, so that a pulled
// narinfo naming it needs no download.
func (c *Cache) HasNarObject(ctx context.Context, name string) bool {
	return c.narPresent(ctx, name)
}
