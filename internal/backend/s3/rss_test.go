package s3

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// resetPeakRSS resets the kernel's high-water mark of this process's resident memory (VmHWM)
// and returns the current resident size, the base a peak is measured from.
func resetPeakRSS(t *testing.T) int64 {
	t.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Logf("cannot reset VmHWM (%v); the peak includes what came before", err)
	}
	return procStatus(t, "VmRSS")
}

func peakRSS(t *testing.T) int64 { return procStatus(t, "VmHWM") }

// procStatus reads a size field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("memory is measured from /proc/self/status (Linux): %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		return kb << 10
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
