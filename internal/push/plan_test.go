package push

import (
	"fmt"
	"slices"
	"testing"
)

// infos makes path infos from "name: ref ref" specs (names stand for store paths).
func planInfos(spec map[string][]string) []PathInfo {
	var out []PathInfo
	for name, refs := range spec {
		out = append(out, PathInfo{Path: name, References: refs})
	}
	return out
}

func TestPlanOrderPutsReferencesFirst(t *testing.T) {
	spec := map[string][]string{
		"app":   {"lib", "libc", "app"}, // a self-reference does not hold a path back
		"lib":   {"libc"},
		"libc":  {},
		"tool":  {"libc", "outside"}, // a path not in the plan is on the server already
		"data":  nil,
		"other": {"data", "lib"},
	}
	order := newPlan(planInfos(spec)).Order()
	pos := map[string]int{}
	for i, p := range order {
		pos[p.Path] = i
	}
	if len(order) != len(spec) {
		t.Fatalf("order has %d paths, want %d", len(order), len(spec))
	}
	for name, refs := range spec {
		for _, r := range refs {
			if _, in := spec[r]; in && r != name && pos[r] > pos[name] {
				t.Errorf("%s comes before its reference %s: %v", name, r, order)
			}
		}
	}
}

func TestPlanCommitsAfterNarAndReferences(t *testing.T) {
	p := newPlan(planInfos(map[string][]string{
		"top": {"a", "b"}, "a": {"c"}, "b": {"c"}, "c": nil,
	}))
	// top's NAR first: its references are not in yet.
	if p.NarUploaded("top") {
		t.Fatal("top may commit before its references")
	}
	if p.NarUploaded("a") {
		t.Fatal("a may commit before c")
	}
	if !p.NarUploaded("c") {
		t.Fatal("c, without references, may not commit after its NAR")
	}
	if got := p.Committed("c"); !slices.Equal(paths(got), []string{"a"}) {
		t.Fatalf("after c: ready %v, want [a] (b's NAR is not up)", paths(got))
	}
	if got := p.Committed("a"); len(got) != 0 {
		t.Fatalf("after a: ready %v, want none (top waits for b)", paths(got))
	}
	if !p.NarUploaded("b") {
		t.Fatal("b may not commit after c and its NAR")
	}
	if got := p.Committed("b"); !slices.Equal(paths(got), []string{"top"}) {
		t.Fatalf("after b: ready %v, want [top]", paths(got))
	}
	if got := p.Committed("b"); got != nil {
		t.Fatalf("committing b twice readied %v", paths(got))
	}
	p.Committed("top")
	if s := p.Stuck(); len(s) != 0 {
		t.Fatalf("stuck: %v", s)
	}
}

func TestPlanFailureFailsDependents(t *testing.T) {
	p := newPlan(planInfos(map[string][]string{
		"top": {"mid", "side"}, "mid": {"base"}, "base": nil, "side": nil, "other": {"side"},
	}))
	newly, deps := p.Failed("base")
	if !newly || !slices.Equal(deps, []string{"mid", "top"}) {
		t.Fatalf("Failed(base) = %v, %v; want true, [mid top]", newly, deps)
	}
	if newly, _ := p.Failed("mid"); newly {
		t.Fatal("mid failed twice")
	}
	if !p.IsFailed("top") || p.IsFailed("side") {
		t.Fatal("top must be failed, side not")
	}
	if !p.NarUploaded("side") {
		t.Fatal("side does not depend on base and may commit")
	}
	if got := p.Committed("side"); !slices.Equal(paths(got), []string{}) && len(got) != 0 {
		t.Fatalf("after side: %v ready, want none (other's NAR is not up, top failed)", paths(got))
	}
	if p.NarUploaded("top") {
		t.Fatal("a failed path may commit")
	}
	if s := p.Stuck(); !slices.Equal(s, []string{"other"}) {
		t.Fatalf("stuck %v, want [other]", s)
	}
}

// TestPlanRandomClosures: in random DAGs completed in random order, every path commits exactly
// once, after its NAR and after every reference.
func TestPlanRandomClosures(t *testing.T) {
	for seed := range 50 {
		n := 2 + seed
		spec := map[string][]string{}
		for i := range n {
			name := fmt.Sprintf("p%03d", i)
			var refs []string
			for j := range i {
				if (i*7+j*13+seed)%5 == 0 {
					refs = append(refs, fmt.Sprintf("p%03d", j))
				}
			}
			spec[name] = refs
		}
		p := newPlan(planInfos(spec))
		committed := map[string]bool{}
		var commit func(string)
		commit = func(path string) {
			if committed[path] {
				t.Fatalf("seed %d: %s committed twice", seed, path)
			}
			for _, r := range spec[path] {
				if !committed[r] {
					t.Fatalf("seed %d: %s committed before its reference %s", seed, path, r)
				}
			}
			committed[path] = true
			for _, next := range p.Committed(path) {
				commit(next.Path)
			}
		}
		// NARs finish in reverse of the planned order: the worst case for waiting.
		order := p.Order()
		for i := len(order) - 1; i >= 0; i-- {
			if p.NarUploaded(order[i].Path) {
				commit(order[i].Path)
			}
		}
		if len(committed) != n {
			t.Fatalf("seed %d: %d of %d committed; stuck %v", seed, len(committed), n, p.Stuck())
		}
	}
}

func paths(infos []PathInfo) []string {
	out := []string{}
	for _, i := range infos {
		out = append(out, i.Path)
	}
	return out
}
