package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestRangePolicy: Range requests on a stored NAR get one range (overlapping and adjacent ones
// merged), 416 when nothing is satisfiable (a zero-byte suffix included), and the whole NAR when
// the ranges are apart, never a multipart body.
func TestRangePolicy(t *testing.T) {
	tc := newTestCache(t)
	nar, content := bigFile(t, tc, 3, 20126)
	size := len(content)
	var many strings.Builder
	many.WriteString("bytes=0-0")
	for i := 1; i < 2000; i++ {
		fmt.Fprintf(&many, ",%d-%d", 2*i, 2*i)
	}
	cases := []struct {
		name, rng  string
		status     int
		start, end int // the body, content[start:end+1]; for 416 unused
	}{
		{"one", "bytes=2-9", 206, 2, 9},
		{"open", "bytes=20000-", 206, 20000, size - 1},
		{"suffix", "bytes=-5", 206, size - 5, size - 1},
		{"suffix beyond the size", "bytes=-100000", 206, 0, size - 1},
		{"zero-byte suffix", "bytes=-0", 416, 0, 0},
		{"past the end", "bytes=" + strconv.Itoa(size) + "-", 416, 0, 0},
		{"end clamped", "bytes=20000-99999", 206, 20000, size - 1},
		{"overlapping", "bytes=0-5,3-10", 206, 0, 10},
		{"adjacent", "bytes=5-9,0-4", 206, 0, 9},
		{"one satisfiable of two", "bytes=0-0," + strconv.Itoa(size) + "-", 206, 0, 0},
		{"zero suffix and one", "bytes=-0,7-8", 206, 7, 8},
		{"apart", "bytes=0-1,5-6", 200, 0, size - 1},
		{"2000 one-byte ranges", many.String(), 200, 0, size - 1},
		{"invalid", "bytes=5-2", 416, 0, 0},
		{"not bytes", "items=0-1", 416, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			{
				r := tc.get(t, nar, withHeader("Range", c.rng))
				if r.Status != c.status {
					t.Fatalf("Range %.60s: %d, want %d", c.rng, r.Status, c.status)
				}
				switch c.status {
				case 416:
					if got, want := r.Header.Get("Content-Range"), "bytes */"+strconv.Itoa(size); got != want && c.name != "invalid" && c.name != "not bytes" {
						t.Errorf("Content-Range %q, want %q", got, want)
					}
				case 206:
					want := fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size)
					if got := r.Header.Get("Content-Range"); got != want {
						t.Errorf("Content-Range %q, want %q", got, want)
					}
					fallthrough
				default:
					if !bytes.Equal(r.Body, content[c.start:c.end+1]) {
						t.Errorf("body of %d bytes, want content[%d:%d]", len(r.Body), c.start, c.end+1)
					}
					if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "multipart/") {
						t.Errorf("a multipart answer (%s)", ct)
					}
				}
			}
		})
	}
	// Through the fast path too (it hands every Range request to net/http).
	fast := serveTimeouts(t, tc, 5e9, 5e9)
	req, _ := http.NewRequest(http.MethodGet, "http://"+fast+nar, nil)
	req.Header.Set("Range", "bytes=-0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("fast path, bytes=-0: %d, want 416", resp.StatusCode)
	}
}
