package membudget

import (
	"os"
	"path"
	"strconv"
	"strings"
)

// MinDefault is the smallest budget DefaultSize picks: a few uploads with xz -9 dictionaries.
const MinDefault = 256 << 20

// DefaultSize is a quarter of the memory this process may use, its cgroup's memory.max (cgroup
// v2, the tightest of its ancestors) or else the machine's MemTotal, in whole MiB, and at least
// MinDefault.
func DefaultSize() int64 {
	limit := int64(0)
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		limit = memTotal(string(b))
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if c := cgroupLimit(string(b), func(p string) (string, error) {
			b, err := os.ReadFile(path.Join("/sys/fs/cgroup", p, "memory.max"))
			return string(b), err
		}); c > 0 && (limit == 0 || c < limit) {
			limit = c
		}
	}
	return max(limit/4&^(1<<20-1), MinDefault) // whole MiB, for the log
}

// memTotal is MemTotal in bytes from /proc/meminfo's text, 0 if absent.
func memTotal(meminfo string) int64 {
	for line := range strings.Lines(meminfo) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil && kb > 0 {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// cgroupLimit is the tightest memory.max of the cgroup v2 named in /proc/self/cgroup's text and
// of its ancestors, read through read (a path under /sys/fs/cgroup); 0 when none is set.
func cgroupLimit(selfCgroup string, read func(string) (string, error)) int64 {
	var dir string
	found := false
	for line := range strings.Lines(selfCgroup) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			dir, found = path.Clean("/"+p), true
		}
	}
	if !found {
		return 0
	}
	limit := int64(0)
	for {
		if s, err := read(dir); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && v > 0 && (limit == 0 || v < limit) {
				limit = v
			}
		}
		if dir == "/" {
			return limit
		}
		dir = path.Dir(dir)
	}
}

// GoHeadroom is what the Go memory limit GoMemoryLimit sets allows beyond the decoder budget:
// the index's caches, connection buffers, recompression encoders and the runtime itself.
const GoHeadroom = 128 << 20

// GoMemoryLimit is the soft limit for Go's heap that keeps a server's memory near its decoder
// budget: without one, the collector lets the heap grow to about twice what is live, so that
// dictionaries of finished uploads, garbage not yet collected, double the budget's bound.
func GoMemoryLimit(budget int64) int64 { return budget + GoHeadroom }
