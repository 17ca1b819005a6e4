package server_test

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics over HTTP and parses it.
func (tc *testCache) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	r := tc.get(t, "/metrics")
	mustStatus(t, "GET /metrics", r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the Prometheus text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, r.Body)
	}
	return fams
}

// metricValue is the value of the counter, gauge or histogram (its sample count) with exactly the
// given labels; 0 when the series does not exist.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// TestMetricsCountRequests makes a known set of requests and checks that each counter moved by
// exactly what they should have caused.
func TestMetricsCountRequests(t *testing.T) {
	tc := newTestCache(t)
	u := newUpload(t, "metrics", "xz")
	u.store(t, tc)
	ni := tc.narinfoOf(t, u)
	missing := "/" + storeHash("metrics-missing") + ".narinfo"
	other := newUpload(t, "metrics-other", "xz") // same compression as u: only the hash differs

	before := tc.scrape(t)

	for range 2 {
		mustStatus(t, "GET narinfo (hit)", tc.get(t, u.NarInfoPath()), http.StatusOK)
	}
	mustStatus(t, "HEAD narinfo (hit)", tc.head(t, u.NarInfoPath()), http.StatusOK)
	for range 3 {
		mustStatus(t, "GET narinfo (miss)", tc.get(t, missing), http.StatusNotFound)
	}
	nar := tc.get(t, "/"+ni.URL)
	mustStatus(t, "GET nar", nar, http.StatusOK)
	// Refused uploads: a wrong token, and a valid NAR under another NAR's file hash.
	refused := tc.put(t, other.NarPath, u.File)
	mustStatus(t, "PUT mismatched NAR", refused, http.StatusBadRequest)
	unauthorized := tc.put(t, other.NarPath, other.File, withBasicAuth("nix", "wrong"))

	mustStatus(t, "PUT with a wrong token", unauthorized, http.StatusUnauthorized)

	after := tc.scrape(t)
	delta := func(name string, labels ...string) float64 {
		return metricValue(after, name, labels...) - metricValue(before, name, labels...)
	}
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cached_http_requests_total", []string{"route", "/{file}", "method", "GET", "code", "200"}, 2},
		{"cached_http_requests_total", []string{"route", "/{file}", "method", "HEAD", "code", "200"}, 1},
		{"cached_http_requests_total", []string{"route", "/{file}", "method", "GET", "code", "404"}, 3},
		{"cached_http_requests_total", []string{"route", "/nar/{file}", "method", "GET", "code", "200"}, 1},
		{"cached_http_requests_total", []string{"route", "/nar/{file}", "method", "PUT", "code", "401"}, 1},
		{"cached_http_requests_total", []string{"route", "/nar/{file}", "method", "PUT", "code", "400"}, 1},
		// The scrape before is counted once it has ended, so it shows in the one after.
		{"cached_http_requests_total", []string{"route", "/metrics", "method", "GET", "code", "200"}, 1},
		{"cached_http_request_duration_seconds", []string{"route", "/{file}", "method", "GET"}, 5},
		{"cached_http_request_duration_seconds", []string{"route", "/nar/{file}", "method", "GET"}, 1},
		{"cached_narinfo_lookups_total", []string{"result", "hit"}, 3},
		{"cached_narinfo_lookups_total", []string{"result", "miss"}, 3},
		{"cached_http_response_bytes_total", []string{"route", "/nar/{file}"}, float64(len(nar.Body) + len(refused.Body) + len(unauthorized.Body))},
		{"cached_http_request_bytes_total", []string{"route", "/nar/{file}"}, float64(len(u.File))},
		{"cached_upload_refusals_total", []string{"field", "FileHash"}, 1},
		{"cached_access_refusals_total", []string{"code", "401"}, 1},
		{"cached_storage_operation_duration_seconds", []string{"op", "narinfo_lookup"}, 6},
		{"cached_storage_operation_duration_seconds", []string{"op", "open"}, 1},
		{"cached_storage_operation_duration_seconds", []string{"op", "put_nar"}, 0},
	}
	for _, tt := range tests {
		if got := delta(tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%q moved by %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	// The narinfo bodies served count as bytes too.
	if got := delta("cached_http_response_bytes_total", "route", "/{file}"); got < 2*float64(len("StorePath: ")) {
		t.Errorf("narinfo bytes served moved by %v", got)
	}
	// The uploads before the first scrape were timed as storage operations.
	if got := metricValue(before, "cached_storage_operation_duration_seconds", "op", "put_nar"); got != 1 {
		t.Errorf("put_nar timed %v times before, want 1", got)
	}
	if got := metricValue(before, "cached_storage_operation_duration_seconds", "op", "put_narinfo"); got != 1 {
		t.Errorf("put_narinfo timed %v times before, want 1", got)
	}

	// The store counts: one path, whose NAR takes what GET /nar sent.
	if got := metricValue(after, "cached_store_paths"); got != 1 {
		t.Errorf("cached_store_paths = %v, want 1", got)
	}
	if got := metricValue(after, "cached_store_nar_bytes"); got != float64(len(nar.Body)) {
		t.Errorf("cached_store_nar_bytes = %v, want %d", got, len(nar.Body))
	}
	if metricValue(after, "go_goroutines") == 0 {
		t.Error("no go_goroutines: the Go runtime collector is missing")
	}
}

// TestMetricsRoutesNotPaths: a flood of distinct paths must not create a series per path.
func TestMetricsRoutesNotPaths(t *testing.T) {
	tc := newTestCache(t)
	for i := range 20 {
		tc.get(t, "/"+storeHash(strings.Repeat("x", i))+".narinfo")
		tc.get(t, "/no/such/route/"+strings.Repeat("y", i+1))
		tc.do(t, "BREW"+strings.Repeat("W", i), "/", nil)
	}
	fams := tc.scrape(t)
	routes := map[string]bool{}
	methods := map[string]bool{}
	for _, m := range fams["cached_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "route":
				routes[l.GetValue()] = true
			case "method":
				methods[l.GetValue()] = true
			}
		}
	}
	for r := range routes {
		if strings.Contains(r, "narinfo") || strings.Contains(r, "such") {
			t.Errorf("route label %q is a raw path", r)
		}
	}
	for m := range methods {
		if strings.HasPrefix(m, "BREW") {
			t.Errorf("method label %q: invented methods must be \"other\"", m)
		}
	}
	if got := metricValue(fams, "cached_narinfo_lookups_total", "result", "miss"); got != 20 {
		t.Errorf("narinfo misses %v, want 20", got)
	}
}

// TestMetricsGCRun: the hook a garbage collector reports into.
func TestMetricsGCRun(t *testing.T) {
	tc := newTestCache(t)
	before := tc.scrape(t)
	for _, name := range []string{"cached_gc_runs_total"} {
		if before[name] == nil {
			t.Errorf("%s is not exported before the first run", name)
		}
	}
	m := tc.Handler.Metrics()
	m.GCRun(1000, 3, nil)
	m.GCRun(24, 1, errors.New("backend went away"))
	after := tc.scrape(t)
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cached_gc_runs_total", []string{"result", "success"}, 1},
		{"cached_gc_runs_total", []string{"result", "failure"}, 1},
		{"cached_gc_freed_bytes_total", nil, 1024},
		{"cached_gc_deleted_paths_total", nil, 4},
	} {
		if got := metricValue(after, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%q = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	last, success := metricValue(after, "cached_gc_last_run_timestamp_seconds"), metricValue(after, "cached_gc_last_success_timestamp_seconds")
	if last < 1e9 || success < 1e9 || success > last {
		t.Errorf("gc timestamps: last run %v, last success %v", last, success)
	}
}

// TestMetricsPerServer: two servers in one process keep separate counts.
func TestMetricsPerServer(t *testing.T) {
	a, b := newTestCache(t), newTestCache(t)
	miss := "/" + storeHash("per-server") + ".narinfo"
	for range 3 {
		a.get(t, miss)
	}
	b.get(t, miss)
	if got := metricValue(a.scrape(t), "cached_narinfo_lookups_total", "result", "miss"); got != 3 {
		t.Errorf("server a: %v misses, want 3", got)
	}
	if got := metricValue(b.scrape(t), "cached_narinfo_lookups_total", "result", "miss"); got != 1 {
		t.Errorf("server b: %v misses, want 1", got)
	}
}
