package index

// Small records that other packages keep in the index under their own prefix (tokens, pins by
// name). Prefixes used here: "k/" tokens.

// PutRecord stores val under prefix+key.
func (ix *Index) PutRecord(prefix, key string, val []byte) error { return ix.set(prefix+key, val) }

// Record returns the value under prefix+key, or ErrNotFound.
func (ix *Index) Record(prefix, key string) ([]byte, error) { return ix.get(prefix + key) }

// DeleteRecord removes prefix+key.
func (ix *Index) DeleteRecord(prefix, key string) error { return ix.del(prefix + key) }

// Records calls fn for every key under prefix (prefix stripped); fn must not keep val.
func (ix *Index) Records(prefix string, fn func(key string, val []byte) error) error {
	return ix.iterate(prefix, fn)
}
