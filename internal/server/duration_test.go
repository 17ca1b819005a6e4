package server

import (
	"strings"
	"testing"
	"time"
)

// TestParseDuration: days and weeks as gc and verify take them, and values that would overflow
// a Duration (which came out negative, so "older than 999999d" meant "older than now") refused,
// naming the value.
func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1.5d": 36 * time.Hour,
		"36h": 36 * time.Hour, "90m": 90 * time.Minute, "0d": 0, "106751d": 106751 * 24 * time.Hour,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"999999d", "20000w", "1e300d", "infd", "+Infd", "NaNd", "-1d", "-5m", "d", "30x", "", "1e400w"} {
		got, err := ParseDuration(in)
		if err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("ParseDuration(%q) = %v, %v; want an error naming it", in, got, err)
		}
	}
}
