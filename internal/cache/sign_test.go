package cache

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cached-dev/cached/internal/narinfo"
	"github.com/cached-dev/cached/internal/signing"
)

// sigsBy returns, for each key, whether served carries a valid signature by it, and the names
// of all signatures.
func checkSigs(t *testing.T, what string, text []byte, valid []signing.SecretKey, absent ...string) {
	t.Helper()
	ni, err := narinfo.Parse(text)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	fp := ni.Fingerprint()
	for _, k := range valid {
		ok := false
		for _, s := range ni.Sigs {
			ok = ok || k.Public().Verify(fp, s)
		}
		if !ok {
			t.Errorf("%s: no valid signature by %s in %q", what, k.Name, ni.Sigs)
		}
	}
	for _, name := range absent {
		if hasSigBy(ni.Sigs, name) {
			t.Errorf("%s: a signature by %s is still there: %q", what, name, ni.Sigs)
		}
	}
}

func mustKey(t testing.TB, name string) signing.SecretKey {
	t.Helper()
	k, err := signing.Generate(name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestKeyRotation: narinfos are signed by every current key when committed, served with the
// signatures of keys added since, and Resign stores those in the backend and the index; old and
// uploaders' signatures stay unless DropOthers.
func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	c, be := newTestCache(t, Options{})
	a, b, builder := mustKey(t, "a-1"), mustKey(t, "b-1"), mustKey(t, "builder-1")
	if err := c.SetSigningKeys([]signing.SecretKey{a}); err != nil {
		t.Fatal(err)
	}
	// Path 0 is uploaded with the builder's signature while only a is configured.
	narBytes := testNar(t, "rotation-0")
	file := compress(t, "zstd", narBytes)
	uploaded := narName(file, "zstd")
	if _, err := c.PutNar(ctx, uploaded, strings.NewReader(string(file))); err != nil {
		t.Fatal(err)
	}
	hash0 := testHash(0)
	ni, _ := narinfo.Parse(narInfoFor(t, hash0, narBytes, file, uploaded, "zstd"))
	ni.Sigs = []string{builder.Sign(ni.Fingerprint())}
	if stored, err := c.PutNarInfo(ctx, hash0, ni.Bytes()); err != nil || !stored {
		t.Fatalf("PutNarInfo: %v, %v", err, stored)
	}
	stored := func(hash string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(be.Root(), hash+".narinfo"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	served := func(hash string) []byte {
		t.Helper()
		text, err := c.NarInfo(context.Background(), hash)
		if err != nil {
			t.Fatal(err)
		}
		return text
	}
	checkSigs(t, "committed with a", served(hash0), []signing.SecretKey{a, builder}, "b-1")

	// "Restart" with a and b: path 0 is served signed by both, stored as it was.
	if err := c.SetSigningKeys([]signing.SecretKey{a, b}); err != nil {
		t.Fatal(err)
	}
	checkSigs(t, "served after adding b", served(hash0), []signing.SecretKey{a, b, builder})
	checkSigs(t, "stored before resign", stored(hash0), []signing.SecretKey{a, builder}, "b-1")
	if got := c.PublicKeys(); len(got) != 2 || got[0].String() != a.Public().String() || c.PublicKey().String() != a.Public().String() {
		t.Errorf("PublicKeys = %v, PublicKey = %v; want a first", got, c.PublicKey())
	}
	hash1 := uploadPath(t, c, 1).hash
	checkSigs(t, "stored, committed with a and b", stored(hash1), []signing.SecretKey{a, b})

	// Only b: still served signed by b; a's and the builder's signatures stay.
	if err := c.SetSigningKeys([]signing.SecretKey{b}); err != nil {
		t.Fatal(err)
	}
	checkSigs(t, "served with b only", served(hash0), []signing.SecretKey{a, b, builder})

	st, err := c.Resign(ctx, ResignOptions{DryRun: true}, nil)
	if err != nil || st.NarInfos != 2 || st.Resigned != 1 || st.SigsAdded != 1 {
		t.Fatalf("dry run: %+v, %v; want 2 looked at, 1 to resign", st, err)
	}
	checkSigs(t, "stored after a dry run", stored(hash0), nil, "b-1")

	st, err = c.Resign(ctx, ResignOptions{}, nil)
	if err != nil || st.Resigned != 1 || st.SigsAdded != 1 || st.SigsDropped != 0 {
		t.Fatalf("resign: %+v, %v", st, err)
	}
	checkSigs(t, "stored after resign", stored(hash0), []signing.SecretKey{a, b, builder})
	raw, _ := c.index.NarInfo(hash0)
	checkSigs(t, "indexed after resign", raw, []signing.SecretKey{a, b, builder})
	if st, err := c.Resign(ctx, ResignOptions{}, nil); err != nil || st.Resigned != 0 {
		t.Errorf("second resign: %+v, %v; want nothing to do", st, err)
	}

	st, err = c.Resign(ctx, ResignOptions{DropOthers: true}, nil)
	if err != nil || st.Resigned != 2 || st.SigsDropped != 3 || st.SigsAdded != 0 {
		t.Fatalf("resign --drop-others: %+v, %v; want a's two and the builder's signature dropped", st, err)
	}
	checkSigs(t, "stored after dropping others", stored(hash0), []signing.SecretKey{b}, "a-1", "builder-1")
	checkSigs(t, "served after dropping others", served(hash1), []signing.SecretKey{b}, "a-1")

	// A new key under b's name: its name is there, so serving cannot tell; resign replaces
	// the signatures that no longer verify.
	b2 := mustKey(t, "b-1")
	if err := c.SetSigningKeys([]signing.SecretKey{b2}); err != nil {
		t.Fatal(err)
	}
	st, err = c.Resign(ctx, ResignOptions{}, nil)
	if err != nil || st.Resigned != 2 || st.SigsAdded != 2 {
		t.Fatalf("resign after replacing b-1: %+v, %v", st, err)
	}
	checkSigs(t, "stored after replacing b-1", stored(hash0), []signing.SecretKey{b2})
	if ni, _ := narinfo.Parse(stored(hash0)); len(ni.Sigs) != 1 {
		t.Errorf("the stale b-1 signature was kept: %q", ni.Sigs)
	}
}

func TestSetSigningKeysRefuses(t *testing.T) {
	c, _ := newTestCache(t, Options{})
	a := mustKey(t, "a-1")
	for name, keys := range map[string][]signing.SecretKey{
		"none":         nil,
		"same name":    {a, mustKey(t, "a-1")},
		"same key":     {a, a},
		"without key":  {{Name: "x-1"}},
		"without name": {{Key: a.Key}},
	} {
		if err := c.SetSigningKeys(keys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := c.SetSigningKeys([]signing.SecretKey{a, mustKey(t, "a-1")}); err == nil || !strings.Contains(err.Error(), `"a-1"`) {
		t.Errorf("duplicate name: %v, want an error naming it", err)
	}
}

// BenchmarkSignServed: the cost a narinfo hit pays for key rotation: looking for each key's
// signature (complete), or adding a missing one (missing).
func BenchmarkSignServed(b *testing.B) {
	c, _ := newTestCache(b, Options{})
	k1, k2 := mustKey(b, "cache.example.org-1"), mustKey(b, "cache.example.org-2")
	ni := &narinfo.NarInfo{
		StorePath: "/nix/store/" + testHash(1) + "-hello-2.12.1", URL: "nar/x.nar.zstd", Compression: "zstd",
		NarHash: narinfo.Hash{Algo: "sha256", Digest: make([]byte, 32)}, NarSize: 226560,
		References: []string{testHash(2) + "-glibc-2.37-8", testHash(1) + "-hello-2.12.1"},
		Deriver:    testHash(3) + "-hello-2.12.1.drv",
	}
	ni.Sigs = []string{k1.Sign(ni.Fingerprint())}
	text := ni.Bytes()
	b.Run("complete", func(b *testing.B) {
		if err := c.SetSigningKeys([]signing.SecretKey{k1}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			c.signServed("h", text)
		}
	})
	b.Run("missing-first-hit", func(b *testing.B) {
		if err := c.SetSigningKeys([]signing.SecretKey{k1, k2}); err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			i++
			c.signServed(strconv.Itoa(i), text)
		}
	})
	b.Run("missing-again", func(b *testing.B) {
		if err := c.SetSigningKeys([]signing.SecretKey{k1, k2}); err != nil {
			b.Fatal(err)
		}
		stored := bytes.Clone(text) // what the index returns is a copy
		for b.Loop() {
			c.signServed("h", stored)
		}
	})
}

// TestSignServedMemo: what signServed remembers is used only for the same stored text, so a path
// collected and uploaded again (other narinfo, same hash) is never served the old one.
func TestSignServedMemo(t *testing.T) {
	c, _ := newTestCache(t, Options{})
	a, b := mustKey(t, "a-1"), mustKey(t, "b-1")
	if err := c.SetSigningKeys([]signing.SecretKey{a, b}); err != nil {
		t.Fatal(err)
	}
	mk := func(size uint64) []byte {
		ni := &narinfo.NarInfo{StorePath: "/nix/store/" + testHash(1) + "-x", URL: "nar/x.nar", NarHash: narinfo.Hash{Algo: "sha256", Digest: make([]byte, 32)}, NarSize: size}
		ni.Sigs = []string{a.Sign(ni.Fingerprint())}
		return ni.Bytes()
	}
	first, second := mk(1), mk(2)
	out1 := c.signServed("h", first)
	if again := c.signServed("h", bytes.Clone(first)); !bytes.Equal(again, out1) {
		t.Fatal("the same stored text is served differently")
	}
	out2 := c.signServed("h", second)
	if bytes.Equal(out1, out2) || !strings.Contains(string(out2), "NarSize: 2\n") {
		t.Fatalf("another stored text under the same hash got the remembered answer:\n%s", out2)
	}
	checkSigs(t, "second", out2, []signing.SecretKey{a, b})
}
