package upstream

import (
	"testing"
	"time"
)

// The breaker opens after Failures failures in a row, skips the upstream for Cooldown, then lets
// one probe through at a time: a success closes it, a failure opens it again at once.
func TestBreaker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := &breaker{failures: 3, cooldown: 10 * time.Second}
	steps := []struct {
		at      time.Duration
		op      string // allow, fail, ok
		want    bool   // allow's answer
		state   breakerState
		comment string
	}{
		{0, "fail", false, closed, "one failure"},
		{0, "ok", false, closed, "a success resets the count"},
		{0, "fail", false, closed, ""},
		{0, "fail", false, closed, ""},
		{0, "allow", true, closed, "two failures: still closed"},
		{0, "fail", false, open, "third in a row: open"},
		{time.Second, "allow", false, open, "skipped while cooling down"},
		{11 * time.Second, "allow", true, halfOpen, "the probe"},
		{11 * time.Second, "allow", false, halfOpen, "one probe at a time"},
		{11 * time.Second, "fail", false, open, "a failed probe opens it again"},
		{12 * time.Second, "allow", false, open, "for a new cooldown"},
		{22 * time.Second, "allow", true, halfOpen, ""},
		{22 * time.Second, "ok", false, closed, "a good probe closes it"},
		{22 * time.Second, "allow", true, closed, ""},
	}
	for i, s := range steps {
		now := t0.Add(s.at)
		switch s.op {
		case "allow":
			if got := b.allow(now); got != s.want {
				t.Fatalf("step %d (%s): allow = %v, want %v", i, s.comment, got, s.want)
			}
		case "fail":
			b.failure(now)
		case "ok":
			b.success()
		}
		if got := b.current(); got != s.state {
			t.Fatalf("step %d (%s): state %s, want %s", i, s.comment, got, s.state)
		}
	}
}
