package upstream

import (
	"sync"
	"time"
)

// breaker is a circuit breaker for one upstream: after Failures failures in a row it opens, and
// requests skip the upstream (a miss costs nothing) for Cooldown; then one request at a time
// probes it (half-open) until one succeeds, which closes it, or fails, which opens it again.
type breaker struct {
	failures int
	cooldown time.Duration

	mu        sync.Mutex
	state     breakerState
	failed    int       // failures in a row
	openUntil time.Time // when open: when a probe may go
	probing   bool      // half-open: a probe is out
}

type breakerState int

const (
	closed breakerState = iota
	open
	halfOpen
)

func (s breakerState) String() string {
	return [...]string{"closed", "open", "half-open"}[s]
}

// allow reports whether a request may go to the upstream now. A true answer in the half-open
// state makes the caller the probe: it must report its outcome.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case open:
		if now.Before(b.openUntil) {
			return false
		}
		b.state, b.probing = halfOpen, true
		return true
	case halfOpen:
		if b.probing {
			return false
		}
		b.probing = true
		return true
	}
	return true
}

// success records an answer from the upstream (a 404 is one).
func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.failed, b.probing = closed, 0, false
}

// failure records a failed request (connection refused, timeout, 5xx), and reports whether it
// opened the breaker.
func (b *breaker) failure(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failed++
	b.probing = false
	if b.state == halfOpen || b.failed >= b.failures {
		opened := b.state != open
		b.state, b.openUntil = open, now.Add(b.cooldown)
		return opened
	}
	return false
}

func (b *breaker) current() breakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}
