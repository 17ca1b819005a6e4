package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/cached-dev/cached/internal/narinfo"
)

// quarantine takes the corrupt and missing NARs found out of service, then the orphans (see the
// package doc for the order).
func (v *verifier) quarantine(ctx context.Context) error {
	slices.SortFunc(v.bad, func(a, b badNar) int { return strings.Compare(a.name, b.name) })
	for _, b := range v.bad {
		if err := v.quarantineNar(ctx, b); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.failure("quarantine %s: %v", b.name, err)
		}
	}
	for _, fi := range v.orphans {
		if err := v.quarantineOrphan(ctx, fi); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			v.failure("quarantine %s: %v", fi.Name, err)
		}
	}
	return nil
}

// quarantineNar takes a corrupt or missing NAR out of service.
func (v *verifier) quarantineNar(ctx context.Context, b badNar) error {
	unchanged, err := v.c.ForgetNar(ctx, b.name, b.seen)
	if err != nil {
		return err
	}
	if !unchanged {
		v.printf("left %s: it was replaced since it was checked", b.name)
		return nil
	}
	what := "is corrupt"
	if b.seen == nil {
		what = "is missing"
	}
	roots := make([]string, len(b.refs))
	for i, r := range b.refs {
		roots[i] = r.hash
	}
	// Narinfos committed between the scan and ForgetNar may name it too: look for them.
	for attempt := 0; ; attempt++ {
		if err := v.deleteNarInfos(ctx, roots, b.name, what); err != nil {
			return err
		}
		ref, err := v.ix.NarReferenced(b.name)
		if err != nil {
			return err
		}
		if !ref {
			break
		}
		if attempt == 2 {
			return errors.New("narinfos naming it keep being committed")
		}
		if roots, err = v.narInfosNaming(b.name); err != nil {
			return err
		}
	}
	if b.seen == nil {
		return nil
	}
	moved, err := v.c.Quarantine(ctx, b.name, func(fi backend.FileInfo) (bool, error) {
		if ref, err := v.ix.NarReferenced(b.name); err != nil {
			return false, err
		} else if ref {
			return false, errors.New("a narinfo naming it was committed meanwhile")
		}
		return cache.SameObject(fi, *b.seen), nil
	})
	if err != nil {
		return err
	}
	if moved {
		v.quarantined(b.name)
	} else {
		v.printf("left %s: it was replaced since it was checked", b.name)
	}
	return nil
}

// quarantineOrphan moves an orphaned NAR or staged upload under quarantine/ if it still is one.
func (v *verifier) quarantineOrphan(ctx context.Context, orphan backend.FileInfo) error {
	moved, err := v.c.Quarantine(ctx, orphan.Name, func(fi backend.FileInfo) (bool, error) {
		if strings.HasPrefix(orphan.Name, cache.StagingPrefix) {
			return time.Since(fi.ModTime) >= v.opts.Grace, nil
		}
		if ref, err := v.ix.NarReferenced(orphan.Name); err != nil || ref {
			return false, err
		}
		return time.Since(v.c.UnreferencedSince(fi)) >= v.opts.Grace, nil
	})
	if err != nil {
		return err
	}
	if moved {
		v.quarantined(orphan.Name)
	} else {
		v.printf("left %s: it is no longer an orphan", orphan.Name)
	}
	return nil
}

// deleteNarInfos deletes the narinfos of roots, whose NAR is corrupt or missing, and of every
// path that references one of them, directly or not, dependents first: a narinfo whose
// references are gone would break its closure (and DeleteNarInfo refuses to leave one). A
// referrer committed while this runs makes it start over.
func (v *verifier) deleteNarInfos(ctx context.Context, roots []string, nar, what string) error {
	isRoot := map[string]bool{}
	for _, h := range roots {
		isRoot[h] = true
	}
	for attempt := 0; ; attempt++ {
		order, err := cache.DependentsFirst(roots, v.ix.Referrers)
		if err != nil {
			return err
		}
		raced := false
		for _, h := range order {
			sp := v.storePathOf(h)
			err := v.c.DeleteNarInfo(ctx, h)
			switch {
			case err == nil:
				why := fmt.Sprintf("its NAR %s %s", nar, what)
				if !isRoot[h] {
					why = fmt.Sprintf("it depends on a path whose NAR %s %s", nar, what)
				}
				v.narInfoDeleted(sp, why)
			case errors.Is(err, index.ErrNotFound):
				// gone already
			case errors.Is(err, cache.ErrReferenced) && attempt < 3:
				raced = true
			default:
				return fmt.Errorf("delete narinfo of %s: %w", sp, err)
			}
			if raced {
				break
			}
		}
		if !raced {
			return nil
		}
	}
}

// narInfosNaming returns the store hashes of the indexed narinfos that name a NAR object. It reads
// the whole index: only a race with an upload needs it.
func (v *verifier) narInfosNaming(name string) ([]string, error) {
	var out []string
	err := v.ix.NarInfos(func(hash string, text []byte) error {
		if ni, err := narinfo.Parse(text); err == nil && ni.URL == name {
			out = append(out, hash)
		}
		return nil
	})
	return out, err
}

func (v *verifier) storePathOf(hash string) string {
	if text, err := v.ix.NarInfo(hash); err == nil {
		if ni, err := narinfo.Parse(text); err == nil {
			return ni.StorePath
		}
	}
	return hash
}
