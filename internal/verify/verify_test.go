package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cached-dev/cached/internal/backend"
	"github.com/cached-dev/cached/internal/backend/disk"
	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
)

func runVerify(t *testing.T, c *cache.Cache, ix *index.Index, opts Options) (Report, string) {
	t.Helper()
	if opts.Sample == 0 {
		opts.Sample = 1
	}
	if opts.Grace == 0 {
		opts.Grace = time.Hour
	}
	var out bytes.Buffer
	rep, err := Run(context.Background(), c, ix, opts, &out)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	return rep, out.String()
}

func exists(be *disk.Backend, name string) bool {
	_, err := be.Stat(context.Background(), name)
	return err == nil
}

// writeOld writes an object straight into the disk backend, dated two hours ago.
func writeOld(t *testing.T, be *disk.Backend, name string, data []byte) {
	t.Helper()
	p := filepath.Join(be.Root(), name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyFindsDamage damages a cache the ways disks and operators do (a flipped byte, a
// truncated file, a deleted file, stray files) and checks that Run reports exactly those,
// changes nothing without Quarantine, and with it takes every damaged NAR and its narinfos out
// of service (a dependent's narinfo too) so that the cache verifies clean and the path can be
// pushed again.
func TestVerifyFindsDamage(t *testing.T) {
	ctx := context.Background()
	c, ix, be := newTestCache(t, cache.Options{})
	var p []testPath
	for i := range 5 {
		p = append(p, uploadPath(t, c, i))
	}
	p = append(p, uploadPath(t, c, 5, p[0])) // p5 depends on p0

	rep, out := runVerify(t, c, ix, Options{Jobs: 4})
	if rep.Problems != 0 || rep.NarsHashed != 6 || rep.NarInfos != 6 || rep.Nars != 6 {
		t.Fatalf("clean cache: %+v\n%s", rep, out)
	}

	root := be.Root()
	// p0: one byte flipped in the middle, size unchanged.
	f0 := filepath.Join(root, p[0].url)
	b, _ := os.ReadFile(f0)
	b[len(b)/2] ^= 0x40
	os.WriteFile(f0, b, 0o644)
	// p1: truncated.
	if err := os.Truncate(filepath.Join(root, p[1].url), 100); err != nil {
		t.Fatal(err)
	}
	// p2: deleted.
	if err := os.Remove(filepath.Join(root, p[2].url)); err != nil {
		t.Fatal(err)
	}
	// A NAR no narinfo names and a staged upload a dead process left, both two hours old; a
	// fresh stray NAR is within the grace period and not an orphan yet.
	orphan := "nar/" + strings.Repeat("1", 52) + ".nar.zst"
	writeOld(t, be, orphan, []byte("not a nar"))
	staged := cache.StagingPrefix + "0123456789abcdef"
	writeOld(t, be, staged, []byte("half an upload"))
	fresh := "nar/" + strings.Repeat("2", 52) + ".nar.zst"
	os.WriteFile(filepath.Join(root, fresh), []byte("uploading"), 0o644)

	rep, out = runVerify(t, c, ix, Options{Jobs: 4})
	want := Report{NarInfos: 6, Nars: 7, NarsHashed: 4, Sample: 1, Problems: 5, Corrupt: 2, Missing: 1, Orphans: 2}
	rep.BytesHashed = 0
	if rep != want {
		t.Errorf("report %+v\nwant   %+v\n%s", rep, want, out)
	}
	for _, s := range []string{"corrupt " + p[0].url, "corrupt " + p[1].url, "missing " + p[2].url, "orphan " + orphan, "orphan " + staged} {
		if !strings.Contains(out, s) {
			t.Errorf("output does not say %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, fresh) {
		t.Errorf("a NAR within the grace period is reported:\n%s", out)
	}
	// Reporting changes nothing.
	for _, name := range []string{p[0].url, p[1].url, orphan, staged, fresh} {
		if !exists(be, name) {
			t.Errorf("verify without quarantine removed %s", name)
		}
	}
	for _, x := range p {
		if _, err := c.NarInfo(context.Background(), x.hash); err != nil {
			t.Errorf("verify without quarantine removed narinfo %s: %v", x.hash, err)
		}
	}

	rep, out = runVerify(t, c, ix, Options{Jobs: 4, Quarantine: true})
	if rep.Problems != 5 || rep.Quarantined != 4 || rep.NarInfosDeleted != 4 || rep.Failures != 0 {
		t.Errorf("quarantine: %+v\n%s", rep, out)
	}
	for _, name := range []string{p[0].url, p[1].url, orphan, staged} {
		if exists(be, name) || !exists(be, cache.QuarantinePrefix+name) {
			t.Errorf("%s was not moved to %s%s:\n%s", name, cache.QuarantinePrefix, name, out)
		}
	}
	if !exists(be, fresh) {
		t.Error("a NAR within the grace period was quarantined")
	}
	for i, x := range p {
		_, err := c.NarInfo(context.Background(), x.hash)
		_, berr := be.Stat(ctx, x.hash+".narinfo")
		gone := errors.Is(err, cache.ErrNotFound) && errors.Is(berr, backend.ErrNotExist)
		if wantGone := i <= 2 || i == 5; gone != wantGone {
			t.Errorf("p%d: narinfo gone %v, want %v (index: %v, backend: %v)", i, gone, wantGone, err, berr)
		}
	}
	if !strings.Contains(out, "deleted narinfo of /nix/store/"+p[5].hash+"-test: it depends on") {
		t.Errorf("the dependent's deletion is not explained:\n%s", out)
	}

	// What is left verifies clean: p5's NAR lost its narinfo just now, within the grace period.
	rep, out = runVerify(t, c, ix, Options{})
	if rep.Problems != 0 || rep.NarsHashed != 2 {
		t.Errorf("after quarantine: %+v\n%s", rep, out)
	}

	// The quarantined path can be pushed again (its NAR is stored afresh, not deduplicated
	// against the quarantined object), and so can its dependent.
	p0 := uploadPath(t, c, 0)
	uploadPath(t, c, 5, p0)
	rep, out = runVerify(t, c, ix, Options{})
	if rep.Problems != 0 || rep.NarsHashed != 4 {
		t.Errorf("after pushing again: %+v\n%s", rep, out)
	}
}

// TestVerifyIndexAndSignatures: a narinfo the index misses, one the index serves without the
// backend having it, and one the server did not sign are reported.
func TestVerifyIndexAndSignatures(t *testing.T) {
	ctx := context.Background()
	c, ix, be := newTestCache(t, cache.Options{StoreCompression: "as-uploaded"})
	uploadPath(t, c, 0)
	p1 := uploadPath(t, c, 1)

	// A narinfo written straight to the backend (by plain nix, or another replica): not
	// indexed, and not signed by this server.
	narBytes := testNar(t, "plain")
	file := xzFile(t, narBytes)
	url := xzNarName(file)
	if _, err := c.PutNar(ctx, url, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	plain := testHash(7)
	if err := be.Save(ctx, plain+".narinfo", bytes.NewReader(narInfoFor(plain, narBytes, file, url))); err != nil {
		t.Fatal(err)
	}
	rep, out := runVerify(t, c, ix, Options{})
	if rep.Problems != 1 || rep.NotIndexed != 1 || !strings.Contains(out, "not indexed "+plain+".narinfo") {
		t.Errorf("narinfo not indexed: %+v\n%s", rep, out)
	}

	if _, err := c.Reindex(ctx, false, nil); err != nil {
		t.Fatal(err)
	}
	rep, out = runVerify(t, c, ix, Options{})
	if rep.Problems != 1 || rep.Unsigned != 1 || !strings.Contains(out, "unsigned /nix/store/"+plain+"-test") {
		t.Errorf("unsigned narinfo: %+v\n%s", rep, out)
	}

	if err := be.Remove(ctx, p1.hash+".narinfo"); err != nil {
		t.Fatal(err)
	}
	rep, out = runVerify(t, c, ix, Options{})
	if rep.Problems != 2 || rep.BadNarInfos != 1 || !strings.Contains(out, "bad narinfo "+p1.hash+": served from the index but not in the backend") {
		t.Errorf("narinfo only in the index: %+v\n%s", rep, out)
	}
}

// TestVerifySample: a sample reads back the fraction asked for, picked by the seed, and finds
// damage only in what it reads; sizes are checked whatever the sample.
func TestVerifySample(t *testing.T) {
	c, ix, be := newTestCache(t, cache.Options{})
	var p []testPath
	for i := range 6 {
		p = append(p, uploadPath(t, c, i))
	}
	rep, out := runVerify(t, c, ix, Options{Sample: 0.5, Seed: 42})
	if rep.NarsHashed != 3 || rep.Problems != 0 {
		t.Fatalf("sample 0.5 of 6: %+v\n%s", rep, out)
	}
	rep, _ = runVerify(t, c, ix, Options{Sample: 0.01, Seed: 42})
	if rep.NarsHashed != 1 {
		t.Fatalf("sample 0.01 of 6 hashes %d NARs, want 1", rep.NarsHashed)
	}

	// Flip a byte in every NAR: a sample of half finds half of them. A truncated one is found
	// by its size whether sampled or not.
	for _, x := range p[:5] {
		f := filepath.Join(be.Root(), x.url)
		b, _ := os.ReadFile(f)
		b[len(b)/2] ^= 1
		os.WriteFile(f, b, 0o644)
	}
	os.Truncate(filepath.Join(be.Root(), p[5].url), 10)
	rep, out = runVerify(t, c, ix, Options{Sample: 0.5, Seed: 7})
	if rep.NarsHashed != 3 || rep.Corrupt != 4 {
		t.Errorf("sample 0.5 of 5 flipped and 1 truncated: %+v, want 3 hashed and 3+1 corrupt\n%s", rep, out)
	}
	again, out2 := runVerify(t, c, ix, Options{Sample: 0.5, Seed: 7})
	if again.Corrupt != rep.Corrupt || out2 != out {
		t.Errorf("the same seed picked another sample:\n%s\n---\n%s", out, out2)
	}
}

func TestSamplePicks(t *testing.T) {
	var names []string
	for i := range 100 {
		names = append(names, fmt.Sprintf("nar/%03d", i))
	}
	a := sample(names, 0.05, 1)
	if len(a) != 5 || !slices.IsSorted(a) {
		t.Fatalf("sample 0.05 of 100: %v", a)
	}
	for _, n := range a {
		if !slices.Contains(names, n) {
			t.Fatalf("sample invented %s", n)
		}
	}
	if b := sample(names, 0.05, 1); !slices.Equal(a, b) {
		t.Errorf("same seed, different samples: %v, %v", a, b)
	}
	if b := sample(names, 0.05, 2); slices.Equal(a, b) {
		t.Errorf("different seeds, same sample: %v", a)
	}
	if b := sample(names, 1, 1); len(b) != 100 {
		t.Errorf("sample 1 has %d names", len(b))
	}
}
