package verify

import (
	"fmt"
	"strings"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/index"
	"github.com/dustin/go-humanize"
)

// The report text: one line per problem, per action taken and per progress step, then a
// summary. Lines are written whole under v.mu: hashing runs in parallel.

func (v *verifier) printf(format string, a ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintf(v.out, format+"\n", a...)
}

// problem counts one problem of a kind and prints it.
func (v *verifier) problem(kind *int, format string, a ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	*kind++
	fmt.Fprintf(v.out, format+"\n", a...)
}

func (v *verifier) failure(format string, a ...any) {
	v.problem(&v.rep.Failures, "failed: "+format, a...)
}

func (v *verifier) quarantined(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.Quarantined++
	fmt.Fprintf(v.out, "quarantined %s -> %s%s\n", name, cache.QuarantinePrefix, name)
}

func (v *verifier) narInfoDeleted(storePath, why string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.NarInfosDeleted++
	fmt.Fprintf(v.out, "deleted narinfo of %s: %s\n", storePath, why)
}

func (v *verifier) summarise() {
	r := &v.rep
	var kinds []string
	for _, k := range []struct {
		n    int
		what string
	}{{r.Corrupt, "corrupt"}, {r.Missing, "missing"}, {r.BadNarInfos, "bad narinfos"}, {r.NotIndexed, "not indexed"}, {r.Unsigned, "unsigned"}, {r.Orphans, "orphans"}, {r.Leftovers, "leftovers"}} {
		if k.n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", k.n, k.what))
		}
	}
	found := "no problems"
	if r.Problems > 0 {
		found = fmt.Sprintf("%s (%s)", countOf(r.Problems, "problem"), strings.Join(kinds, ", "))
	}
	v.printf("verify: %d narinfos, %d NAR objects, %d hashed (%s): %s", r.NarInfos, r.Nars, r.NarsHashed, humanize.IBytes(uint64(r.BytesHashed)), found)
	if v.opts.Quarantine {
		v.printf("verify: %s quarantined under %s, %s deleted", countOf(r.Quarantined, "object"), cache.QuarantinePrefix, countOf(r.NarInfosDeleted, "narinfo"))
	}
	if r.Failures > 0 {
		v.printf("verify: %s (checks or actions that could not be done)", countOf(r.Failures, "failure"))
	}
}

// countOf says "1 problem", "2 problems".
func countOf(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func describeNar(r index.NarRecord) string {
	return fmt.Sprintf("NarHash %s, NarSize %d, FileHash %s, FileSize %d", r.NarHash, r.NarSize, r.FileHash, r.FileSize)
}

func storePaths(refs []narRef) string {
	ps := make([]string, len(refs))
	for i, r := range refs {
		ps[i] = r.storePath
	}
	return strings.Join(ps, ", ")
}
