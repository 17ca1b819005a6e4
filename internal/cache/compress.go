package cache

import (
	"io"
)

// decompressor returns a reader of the uncompressed bytes of r, which is in the named narinfo
// compression. Memory stays bounded whatever the input: windows and dictionaries are capped
// (NewDecoder).
func decompressor(compression string, r io.Reader) (io.ReadCloser, error) {
	return NewDecoder(compression, r, MaxNarWindow, nil)
}
