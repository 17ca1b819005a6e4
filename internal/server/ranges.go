package server

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// The Range policy, for every stored object (NARs, listings, logs): http.ServeContent answers
// any number of ranges with a multipart body, and a suffix range of zero bytes with a 206 whose
// Content-Range is invalid. So the Range header is first reduced to what a download needs (Nix
// sends at most one range, to resume):
//
//   - ranges that overlap or touch are merged; a range past the end, or a suffix of 0 bytes, is
//     unsatisfiable and dropped;
//   - one range left: 206 with that range;
//   - none left: 416 with Content-Range: bytes */SIZE;
//   - more than one left: 200 with the whole object, as nginx does past max_ranges: a client
//     that asks for pieces gets the whole, never a multipart body larger than the object.
//
// A header that does not parse is left to http.ServeContent (416), as are If-Range and the
// other conditions.

// simplifyRange returns the Range header to hand to http.ServeContent for an object of size
// bytes, and false when the object should be sent whole (the header dropped).
func simplifyRange(h string, size int64) (string, bool) {
	specs, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return h, true
	}
	type span struct{ start, end int64 } // inclusive
	var spans []span
	for spec := range strings.SplitSeq(specs, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue
		}
		first, last, ok := strings.Cut(spec, "-")
		if !ok {
			return h, true
		}
		if first == "" { // a suffix: the last N bytes
			n, ok := rangeNumber(last)
			if !ok {
				return h, true
			}
			if n > 0 && size > 0 {
				spans = append(spans, span{max(0, size-n), size - 1})
			}
			continue
		}
		start, ok := rangeNumber(first)
		if !ok {
			return h, true
		}
		end := size - 1
		if last != "" {
			if end, ok = rangeNumber(last); !ok || end < start {
				return h, true
			}
			end = min(end, size-1)
		}
		if start < size {
			spans = append(spans, span{start, end})
		}
	}
	if len(spans) == 0 {
		// Nothing satisfiable: a range starting at the end is what http.ServeContent answers
		// with 416 and Content-Range: bytes */SIZE (or, for an empty object, with the object).
		return "bytes=" + strconv.FormatInt(size, 10) + "-", true
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	merged := spans[0]
	for _, s := range spans[1:] {
		if s.start > merged.end+1 {
			return "", false // two pieces apart: the whole object
		}
		merged.end = max(merged.end, s.end)
	}
	return "bytes=" + strconv.FormatInt(merged.start, 10) + "-" + strconv.FormatInt(merged.end, 10), true
}

// rangeNumber parses a byte position: decimal digits only, as http.ServeContent reads them.
func rangeNumber(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
