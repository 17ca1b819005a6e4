//go:build !unix

package watch

import "os"

// lockFile does nothing where there is no flock: one watch-store per queue is then up to the
// operator.
func lockFile(*os.File) error { return nil }
