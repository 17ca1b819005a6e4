package server

import (
	"bytes"
	"strings"
	"testing"
)

// TestProgressRoundTrip: what the server writes (lines, then writeReport) the CLI reads back
// (ReadProgress): every progress line in order, and the report.
func TestProgressRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString("deleting a\ndeleting b\n")
	writeReport(&buf, map[string]int{"paths": 2})
	var lines []string
	var rep struct{ Paths int }
	if err := ReadProgress(&buf, func(l string) { lines = append(lines, l) }, &rep); err != nil {
		t.Fatal(err)
	}
	if strings.Join(lines, "|") != "deleting a|deleting b" || rep.Paths != 2 {
		t.Errorf("read %q and %+v", lines, rep)
	}
}

// TestProgressWithoutReport: a stream cut before its report, or with a report that is not JSON,
// is an error (the CLI says the run may still be going), not an empty report.
func TestProgressWithoutReport(t *testing.T) {
	for _, in := range []string{"", "deleting a\n", "deleting a\nreport: {\"paths\":\n", "report: not json\n"} {
		var rep struct{ Paths int }
		if err := ReadProgress(strings.NewReader(in), func(string) {}, &rep); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// FuzzReadProgress: any stream is read without panicking, and one that ends with a report that
// writeReport wrote yields that report.
func FuzzReadProgress(f *testing.F) {
	f.Add("a\nb\n", 3)
	f.Add("report: {}\n", 0)
	f.Add(strings.Repeat("x", 70000), 1)
	f.Fuzz(func(t *testing.T, lines string, n int) {
		var rep struct{ N int }
		ReadProgress(strings.NewReader(lines), func(string) {}, &rep)
		if strings.Contains(lines, "\r") || len(lines) > 1<<20 {
			return
		}
		var buf bytes.Buffer
		// Take every report line out of the input first; the replacement shares no character
		// with the prefix's "report:" so it cannot form a new one ("report: eport: " once did).
		buf.WriteString(strings.ReplaceAll(lines, reportPrefix, "REPORT "))
		if !strings.HasSuffix(lines, "\n") && lines != "" {
			buf.WriteByte('\n')
		}
		writeReport(&buf, struct{ N int }{n})
		rep.N = 0
		if err := ReadProgress(&buf, func(string) {}, &rep); err != nil || rep.N != n {
			t.Errorf("%q then report %d: read %d, %v", lines, n, rep.N, err)
		}
	})
}
