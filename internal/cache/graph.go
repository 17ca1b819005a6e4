package cache

// DependentsFirst returns roots and every path that refers to one of them, directly or not, each
// before the paths it refers to: the order in which narinfos can be deleted without a kept one
// ever naming a deleted reference. referrers gives the store hashes that refer to a hash (a
// self-reference is ignored). Paths on a cycle, which references cannot form apart from
// self-references, come out in some order. Roots are visited in the order given, so the order is
// deterministic when referrers is.
func DependentsFirst(roots []string, referrers func(hash string) ([]string, error)) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	var visit func(h string) error
	visit = func(h string) error {
		if seen[h] {
			return nil
		}
		seen[h] = true
		refs, err := referrers(h)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if r != h {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		order = append(order, h)
		return nil
	}
	for _, h := range roots {
		if err := visit(h); err != nil {
			return nil, err
		}
	}
	return order, nil
}
