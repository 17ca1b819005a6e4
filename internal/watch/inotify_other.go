//go:build !linux

package watch

import "errors"

type notifier struct{ dbErr error }

// newNotifier fails where there is no inotify: watch-store then finds new paths by its
// periodic scans alone.
func newNotifier(storeDir, dbDir, queueDir string) (*notifier, error) {
	return nil, errors.New("no inotify on this system: new paths are found by the periodic scan only")
}

func (n *notifier) run(out chan<- event) error { return nil }

func (n *notifier) Close() error { return nil }
