package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cached-dev/cached/internal/cache"
	"github.com/cached-dev/cached/internal/membudget"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prometheus metrics, served at /metrics from a registry of the Server's own (never the global
// one), so that any number of servers can live in one process.
//
// Every request is counted by the one middleware that also logs it (logRequests), from the
// statusWriter it already has: the handlers know nothing of metrics. The label values a request
// needs are resolved once per (route, method, status) and kept, so the narinfo hot path costs a
// map lookup and a few atomic adds.

// observability is the per-Server state behind /metrics and the landing page's counts.
type observability struct {
	metrics *Metrics
	stats   *cache.StatsCounter
}

// statsMaxAge is how stale the store counts (landing page, cached_store_* gauges) may get. The
// index keeps no running totals, so each refresh is a scan of the index.
const statsMaxAge = 30 * time.Second

func newObservability(c *cache.Cache) *observability {
	stats := c.NewStatsCounter(statsMaxAge)
	return &observability{metrics: newMetrics(stats), stats: stats}
}

// Metrics returns the server's metrics, for components outside the HTTP layer (garbage
// collection) to report into.
func (s *Server) Metrics() *Metrics { return s.obs.metrics }

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.obs.metrics.handler.ServeHTTP(w, r)
}

// Metrics are the server's Prometheus metrics.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	requests       *prometheus.CounterVec   // route, method, code
	duration       *prometheus.HistogramVec // route, method
	responseBytes  *prometheus.CounterVec   // route
	requestBytes   *prometheus.CounterVec   // route
	storageLatency *prometheus.HistogramVec // op
	narinfoHits    prometheus.Counter
	narinfoMisses  prometheus.Counter
	uploadRefusals *prometheus.CounterVec // field
	accessRefusals *prometheus.CounterVec // code

	gcRuns        *prometheus.CounterVec // result
	gcFreedBytes  prometheus.Counter
	gcDeleted     prometheus.Counter
	gcLastRun     prometheus.Gauge
	gcLastSuccess prometheus.Gauge

	// series maps what identifies a request to its resolved metrics. It is copied on write: the
	// set of keys is small and bounded (routes x methods x the statuses handlers write), and after
	// warm-up every request only reads it.
	series   atomic.Pointer[map[seriesKey]*series]
	seriesMu sync.Mutex
}

// Buckets from a narinfo hit out of the index (well under a millisecond) to a NAR of gigabytes
// over a slow link.
var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func newMetrics(stats *cache.StatsCounter) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cached_http_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its answer, by route pattern and method.",
			Buckets: durationBuckets,
		}, []string{"route", "method"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_http_response_bytes_total",
			Help: "Response body bytes sent, by route pattern.",
		}, []string{"route"}),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_http_request_bytes_total",
			Help: "Request body bytes read by the handlers, by route pattern.",
		}, []string{"route"}),
		storageLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cached_storage_operation_duration_seconds",
			Help: "Time from receiving a request until its handler starts answering, for requests that " +
				"reached the index or the backend: narinfo_lookup (index), open (backend open and stat), " +
				"put_nar (streaming, verifying and storing a NAR), put_narinfo, put_file.",
			Buckets: durationBuckets,
		}, []string{"op"}),
		uploadRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_upload_refusals_total",
			Help: "Uploads refused as invalid (400, by the field that failed verification) or too large (413, field \"size\").",
		}, []string{"field"}),
		accessRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_access_refusals_total",
			Help: "Requests refused for a missing or unknown token (401) or one without the needed scope (403).",
		}, []string{"code"}),
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_gc_runs_total",
			Help: "Garbage collection runs, by result (success, failure).",
		}, []string{"result"}),
		gcFreedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cached_gc_freed_bytes_total",
			Help: "Bytes of storage freed by garbage collection.",
		}),
		gcDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cached_gc_deleted_paths_total",
			Help: "Store paths deleted by garbage collection.",
		}),
		gcLastRun: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cached_gc_last_run_timestamp_seconds",
			Help: "Unix time the last garbage collection run ended.",
		}),
		gcLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cached_gc_last_success_timestamp_seconds",
			Help: "Unix time the last successful garbage collection run ended.",
		}),
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cached_narinfo_lookups_total",
		Help: "Narinfo GET and HEAD answers, by result: hit (200) or miss (404).",
	}, []string{"result"})
	m.narinfoHits, m.narinfoMisses = lookups.WithLabelValues("hit"), lookups.WithLabelValues("miss")
	// Series worth seeing at zero before anything happened.
	m.gcRuns.WithLabelValues("success")
	m.gcRuns.WithLabelValues("failure")
	m.accessRefusals.WithLabelValues("401")

	m.reg.MustRegister(m.requests, m.duration, m.responseBytes, m.requestBytes, m.storageLatency, lookups,
		m.uploadRefusals, m.accessRefusals, m.gcRuns, m.gcFreedBytes, m.gcDeleted, m.gcLastRun, m.gcLastSuccess,
		newStoreCollector(stats),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
	empty := map[seriesKey]*series{}
	m.series.Store(&empty)
	return m
}

// GCRun records one garbage collection run, once it has ended: the bytes of storage it freed and
// the store paths it deleted (also when it failed part-way), and whether it failed.
func (m *Metrics) GCRun(freedBytes int64, deletedPaths int, err error) {
	now := float64(time.Now().UnixNano()) / 1e9
	if freedBytes > 0 {
		m.gcFreedBytes.Add(float64(freedBytes))
	}
	if deletedPaths > 0 {
		m.gcDeleted.Add(float64(deletedPaths))
	}
	m.gcLastRun.Set(now)
	if err != nil {
		m.gcRuns.WithLabelValues("failure").Inc()
		return
	}
	m.gcRuns.WithLabelValues("success").Inc()
	m.gcLastSuccess.Set(now)
}

// seriesKey is what the metrics of one request depend on.
type seriesKey struct {
	route   string // chi route pattern, "none" when nothing matched
	method  string // one of knownMethods, or "other"
	code    int
	narinfo bool // the request named a .narinfo (route /{file} serves listings too)
}

// series is the resolved metrics of one seriesKey.
type series struct {
	requests      prometheus.Counter
	duration      prometheus.Observer
	responseBytes prometheus.Counter
	requestBytes  prometheus.Counter
	storage       prometheus.Observer // nil: the request did not reach the index or backend
	lookup        prometheus.Counter  // narinfo hit or miss; nil for anything else
}

// knownMethods are the methods given their own label value; any other is "other", so that a
// client inventing methods cannot create series.
var knownMethods = []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete}

func methodLabel(m string) string {
	for _, k := range knownMethods {
		if m == k {
			return k
		}
	}
	return "other"
}

// observe records one finished request. sinceStart is its duration; firstByte is when the
// handler started answering, relative to the start (0 if it never did).
func (m *Metrics) observe(k seriesKey, sinceStart, firstByte time.Duration, sent, received int64, err error) {
	se := m.seriesFor(k)
	se.requests.Inc()
	se.duration.Observe(sinceStart.Seconds())
	if sent > 0 {
		se.responseBytes.Add(float64(sent))
	}
	if received > 0 {
		se.requestBytes.Add(float64(received))
	}
	if se.storage != nil && firstByte > 0 {
		se.storage.Observe(firstByte.Seconds())
	}
	if se.lookup != nil {
		se.lookup.Inc()
	}
	switch {
	case k.code == http.StatusUnauthorized || k.code == http.StatusForbidden:
		m.accessRefusals.WithLabelValues(strconv.Itoa(k.code)).Inc()
	case k.method != http.MethodPut:
	case k.code == http.StatusRequestEntityTooLarge:
		m.uploadRefusals.WithLabelValues("size").Inc()
	case k.code == http.StatusBadRequest:
		m.uploadRefusals.WithLabelValues(refusedField(err)).Inc()
	}
}

// refusedField names what an upload refusal is about, from the error writeError was given.
func refusedField(err error) string {
	var ie *cache.InputError
	if !errors.As(err, &ie) {
		return "other"
	}
	// Fields are constants in the code; the bound only guards against a future dynamic one.
	if ie.Field == "" || len(ie.Field) > 32 {
		return "other"
	}
	return ie.Field
}

func (m *Metrics) seriesFor(k seriesKey) *series {
	if se, ok := (*m.series.Load())[k]; ok {
		return se
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	old := *m.series.Load()
	if se, ok := old[k]; ok {
		return se
	}
	se := &series{
		requests:      m.requests.WithLabelValues(k.route, k.method, strconv.Itoa(k.code)),
		duration:      m.duration.WithLabelValues(k.route, k.method),
		responseBytes: m.responseBytes.WithLabelValues(k.route),
		requestBytes:  m.requestBytes.WithLabelValues(k.route),
	}
	if op := storageOp(k); op != "" {
		se.storage = m.storageLatency.WithLabelValues(op)
	}
	if k.narinfo && (k.method == http.MethodGet || k.method == http.MethodHead) {
		switch k.code {
		case http.StatusOK:
			se.lookup = m.narinfoHits
		case http.StatusNotFound:
			se.lookup = m.narinfoMisses
		}
	}
	next := make(map[seriesKey]*series, len(old)+1)
	for key, v := range old {
		next[key] = v
	}
	next[k] = se
	m.series.Store(&next)
	return se
}

// storageOp names the index or backend operation a request's handler performed before answering,
// or "" for none. Refusals (400, 401, 403, 413) are answered before or instead of the operation,
// so they are not timed.
func storageOp(k seriesKey) string {
	read := k.method == http.MethodGet || k.method == http.MethodHead
	switch {
	case k.code >= 500, k.code < 400, read && k.code == http.StatusNotFound:
	default:
		return ""
	}
	switch k.route {
	case "/{file}":
		switch {
		case k.narinfo && read:
			return "narinfo_lookup"
		case k.narinfo && k.method == http.MethodPut:
			return "put_narinfo"
		}
	case "/nar/{file}":
		if k.method == http.MethodPut {
			return "put_nar"
		}
	case "/log/{drv}", "/realisations/{id}", "/build-trace-v2/{drv}/{output}", "/debuginfo/{id}":
	default:
		return ""
	}
	switch {
	case read:
		return "open"
	case k.method == http.MethodPut:
		return "put_file"
	}
	return ""
}

// storeCollector exports the store counts. It exports nothing until a first count has finished:
// a 0 would read as an empty cache.
type storeCollector struct {
	stats                    *cache.StatsCounter
	paths, narBytes, counted *prometheus.Desc
}

func newStoreCollector(stats *cache.StatsCounter) *storeCollector {
	return &storeCollector{
		stats:    stats,
		paths:    prometheus.NewDesc("cached_store_paths", "Store paths (narinfos) the cache serves, recounted at most every 30s.", nil, nil),
		narBytes: prometheus.NewDesc("cached_store_nar_bytes", "Bytes the stored NAR files take (sum of their FileSize), recounted at most every 30s.", nil, nil),
		counted:  prometheus.NewDesc("cached_store_counted_timestamp_seconds", "Unix time the store counts were taken.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.paths
	ch <- c.narBytes
	ch <- c.counted
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st := c.stats.Stats(ctx)
	if st.CountedAt.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.paths, prometheus.GaugeValue, float64(st.StorePaths))
	ch <- prometheus.MustNewConstMetric(c.narBytes, prometheus.GaugeValue, float64(st.NarBytes))
	ch <- prometheus.MustNewConstMetric(c.counted, prometheus.GaugeValue, float64(st.CountedAt.UnixNano())/1e9)
}

// isProbe reports whether a route is polled by machines (orchestrator probes, scrapers): its
// successful requests are logged at debug level, so they do not drown the request log.
func isProbe(route string) bool {
	return route == "/healthz" || route == "/readyz" || route == "/metrics"
}

// routeLabel is the route pattern chi matched, or "none".
func routeLabel(pattern string) string {
	if pattern == "" {
		return "none"
	}
	return pattern
}

// isNarInfoPath reports whether a request path names a narinfo.
func isNarInfoPath(p string) bool { return strings.HasSuffix(p, ".narinfo") }

// registerDecoderMemory serves the decoder memory budget and what uploads hold of it.
func (m *Metrics) registerDecoderMemory(b *membudget.Budget) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cached_decoder_memory_budget_bytes",
			Help: "Memory the decoders of concurrent uploads may reserve together (--decoder-memory).",
		}, func() float64 { return float64(b.Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cached_decoder_memory_reserved_bytes",
			Help: "Memory the decoders of uploads in progress have reserved (dictionaries and windows their streams declare).",
		}, func() float64 { return float64(b.Reserved()) }))
}
