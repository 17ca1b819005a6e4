package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The progress protocol of the long admin runs (POST /_cached/gc, /_cached/verify): the answer
// is text, one progress line at a time as the run goes, and its last line is "report: " followed
// by the run's JSON report. The CLI prints the lines and decodes the report (ReadProgress).

const reportPrefix = "report: "

// writeReport writes the final line of a progress stream.
func writeReport(out io.Writer, report any) {
	b, _ := json.Marshal(report)
	fmt.Fprintf(out, "%s%s\n", reportPrefix, b)
}

// ReadProgress reads a progress stream: it hands every line but the report to line and decodes
// the report into report. A stream that ends without a report (the run is still going, or the
// server or connection died) or whose report is not JSON is an error.
func ReadProgress(r io.Reader, line func(string), report any) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	got := false
	for sc.Scan() {
		text := sc.Text()
		if js, ok := strings.CutPrefix(text, reportPrefix); ok {
			if err := json.Unmarshal([]byte(js), report); err != nil {
				return fmt.Errorf("report %.100q: %w", js, err)
			}
			got = true
			continue
		}
		line(text)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !got {
		return errors.New("no report line")
	}
	return nil
}
