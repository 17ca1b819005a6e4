package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cached-dev/cached/internal/server"
)

type verifyCmd struct {
	adminFlags
	Sample     float64 `help:"Fraction of the NARs to read back and re-hash, 0 < F <= 1 (sizes are checked for all): 1 (the default) re-hashes every NAR, 0.05 a random 5%." default:"1" placeholder:"FRACTION"`
	Grace      string  `help:"A NAR that no narinfo names, or a staged upload, counts as orphaned only after this long." default:"1h"`
	Quarantine bool    `help:"Move corrupt NARs and orphaned objects under quarantine/ in the backend, and delete the narinfos of corrupt or missing NARs (and of the paths that depend on them), instead of only reporting."`
	Jobs       int     `help:"NARs re-hashed at once." default:"4"`
}

func (v *verifyCmd) Run(log *slog.Logger) error {
	if !(v.Sample > 0 && v.Sample <= 1) {
		return fmt.Errorf("--sample %v: want a fraction 0 < F <= 1, e.g. 0.05", v.Sample)
	}
	q := url.Values{}
	q.Set("sample", strconv.FormatFloat(v.Sample, 'g', -1, 64))
	q.Set("grace", v.Grace)
	q.Set("jobs", strconv.Itoa(v.Jobs))
	if v.Quarantine {
		q.Set("quarantine", "1")
	}
	resp, err := v.do(http.MethodPost, "/_cached/verify?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var report struct {
		Problems    int    `json:"problems"`
		Corrupt     int    `json:"corrupt"`
		Missing     int    `json:"missing"`
		BadNarInfos int    `json:"badNarInfos"`
		NotIndexed  int    `json:"notIndexed"`
		Unsigned    int    `json:"unsigned"`
		Orphans     int    `json:"orphans"`
		Failures    int    `json:"failures"`
		Error       string `json:"error"`
	}
	if err := server.ReadProgress(resp.Body, printLine, &report); err != nil {
		return fmt.Errorf("the verification's output ended early (%v): see the server log", err)
	}
	if report.Error != "" {
		return errors.New("verification did not finish: " + report.Error)
	}
	var errs []string
	if report.Problems > 0 {
		errs = append(errs, fmt.Sprintf("%d problem(s) found", report.Problems))
	}
	if report.Failures > 0 {
		errs = append(errs, fmt.Sprintf("%d failure(s): checks or actions that could not be done", report.Failures))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, ", "))
	}
	return nil
}
