package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/index"
)

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
