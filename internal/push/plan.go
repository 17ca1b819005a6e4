package push

import (
	"sort"
	"sync"
)

// plan decides when each path's narinfo may be committed: after its own NAR is uploaded and
// after the narinfos of all its references (other than itself) are, since the server refuses a
// narinfo whose references it does not serve, and a client must never see a path whose closure
// is incomplete. References outside the plan are taken to be on the server already. A path
// whose NAR or narinfo failed fails every path that depends on it, directly or not: their
// narinfos are never sent. It is safe for concurrent use.
type plan struct {
	mu    sync.Mutex
	nodes map[string]*planNode
	order []*planNode // references before the paths that depend on them
}

type planNode struct {
	info       PathInfo
	waiting    int // references in the plan whose narinfo is not committed yet
	narDone    bool
	committed  bool
	failed     bool
	dependents []*planNode
}

// newPlan plans the upload of paths (each once).
func newPlan(paths []PathInfo) *plan {
	p := &plan{nodes: make(map[string]*planNode, len(paths))}
	for _, info := range paths {
		p.nodes[info.Path] = &planNode{info: info}
	}
	for _, n := range p.nodes {
		for _, r := range uniq(n.info.References) {
			if r == n.info.Path {
				continue
			}
			if dep, ok := p.nodes[r]; ok {
				n.waiting++
				dep.dependents = append(dep.dependents, n)
			}
		}
	}
	p.order = p.topological()
	return p
}

func uniq(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0:0]
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// topological orders the nodes references first (Kahn's algorithm), ties broken by path so
// that the order is stable. Store paths cannot reference each other in a cycle; should a
// broken store report one anyway, the nodes on it come last, and their narinfos are never
// committed (they fail as waiting for each other).
func (p *plan) topological() []*planNode {
	indeg := make(map[*planNode]int, len(p.nodes))
	var ready []*planNode
	for _, n := range p.nodes {
		indeg[n] = n.waiting
		if n.waiting == 0 {
			ready = append(ready, n)
		}
	}
	byPath := func(s []*planNode) {
		sort.Slice(s, func(i, j int) bool { return s[i].info.Path < s[j].info.Path })
	}
	byPath(ready)
	order := make([]*planNode, 0, len(p.nodes))
	for len(ready) > 0 {
		n := ready[0]
		ready = ready[1:]
		order = append(order, n)
		var next []*planNode
		for _, d := range n.dependents {
			if indeg[d]--; indeg[d] == 0 {
				next = append(next, d)
			}
		}
		byPath(next)
		ready = append(ready, next...)
	}
	if len(order) < len(p.nodes) {
		var rest []*planNode
		for _, n := range p.nodes {
			if indeg[n] > 0 {
				rest = append(rest, n)
			}
		}
		byPath(rest)
		order = append(order, rest...)
	}
	return order
}

// Order returns the paths in the order their NARs should be uploaded: references first, so
// that narinfos can be committed as early as possible (an interrupted push leaves complete
// closures behind).
func (p *plan) Order() []PathInfo {
	out := make([]PathInfo, len(p.order))
	for i, n := range p.order {
		out[i] = n.info
	}
	return out
}

// NarUploaded records that path's NAR is on the server and reports whether its narinfo may be
// committed now.
func (p *plan) NarUploaded(path string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[path]
	if n == nil || n.failed {
		return false
	}
	n.narDone = true
	return n.waiting == 0
}

// Committed records that path's narinfo is on the server and returns the paths whose narinfos
// may be committed now because of it.
func (p *plan) Committed(path string) []PathInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[path]
	if n == nil || n.committed {
		return nil
	}
	n.committed = true
	var ready []PathInfo
	for _, d := range n.dependents {
		d.waiting--
		if d.waiting == 0 && d.narDone && !d.failed {
			ready = append(ready, d.info)
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Path < ready[j].Path })
	return ready
}

// Failed records that path could not be pushed. It reports whether path was not failed
// already, and returns the paths that newly fail because they depend on it (directly or not),
// sorted.
func (p *plan) Failed(path string) (newly bool, dependents []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[path]
	if n == nil || n.failed || n.committed {
		return false, nil
	}
	n.failed = true
	var out []string
	stack := append([]*planNode(nil), n.dependents...)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if d.failed || d.committed {
			continue
		}
		d.failed = true
		out = append(out, d.info.Path)
		stack = append(stack, d.dependents...)
	}
	sort.Strings(out)
	return true, out
}

// IsFailed reports whether path has failed (or depends on a path that has): its NAR need not
// be uploaded.
func (p *plan) IsFailed(path string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[path]
	return n != nil && n.failed
}

// Stuck returns the paths that are neither committed nor failed: after every upload has
// ended, these wait on references that can never be committed (a cycle).
func (p *plan) Stuck() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for path, n := range p.nodes {
		if !n.committed && !n.failed {
			out = append(out, path)
		}
	}
	sort.Strings(out)
	return out
}
