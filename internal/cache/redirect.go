package cache

// NarIndexed reports whether the index holds the verified record of a NAR stored under name,
// without asking the backend. A NAR only in the backend (a bucket plain nix wrote, a crash
// between store and commit) is not indexed until it is first served.
func (c *Cache) NarIndexed(name string) bool {
	_, err := c.index.Nar(name)
	return err == nil
}
