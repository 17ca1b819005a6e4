package upstream

import "github.com/prometheus/client_golang/prometheus"

// metrics are pull-through's Prometheus metrics; the server registers Collectors in its registry.
type metrics struct {
	requests     *prometheus.CounterVec // upstream, kind, result
	refused      *prometheus.CounterVec // upstream, reason
	bytes        *prometheus.CounterVec // upstream
	negativeHits prometheus.Counter
	breakerState []prometheus.Collector // one gauge per upstream
	pulledHits   []prometheus.Collector // narinfo, nar
}

func newMetrics(p *Puller) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_upstream_requests_total",
			Help: "Requests to upstreams, by upstream, kind (narinfo, nar) and result (ok, not_found, " +
				"invalid, bad_signature, refused (a NAR that failed verification), timeout, status_5xx, " +
				"error, breaker_open (not sent); resumed: a NAR download that broke and was resumed with Range).",
		}, []string{"upstream", "kind", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_upstream_refused_total",
			Help: "What upstreams served that was neither served nor stored, by upstream and reason " +
				"(invalid, bad_signature, unstorable, bad_nar).",
		}, []string{"upstream", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cached_upstream_pulled_bytes_total",
			Help: "Bytes of NARs pulled from upstreams, verified and stored, by upstream.",
		}, []string{"upstream"}),
		negativeHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cached_upstream_negative_hits_total",
			Help: "Narinfo misses answered from the memory of a recent upstream 404, without asking.",
		}),
	}
	if p.store != nil {
		for i, kind := range []string{"narinfo", "nar"} {
			m.pulledHits = append(m.pulledHits, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "cached_pulled_hits_total",
				Help: "Hits on paths pulled from an upstream, by kind (narinfo: GET/HEAD of a pulled " +
					"narinfo once stored; nar: download of a pulled NAR object, the ones served while it " +
					"was pulled included), counted when access times are flushed (every 10s).",
				ConstLabels: prometheus.Labels{"kind": kind},
			}, func() float64 {
				ni, nar := p.store.PulledHits()
				return float64([]uint64{ni, nar}[i])
			}))
		}
	}
	for _, u := range p.upstreams {
		m.breakerState = append(m.breakerState, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "cached_upstream_breaker_state",
			Help:        "Circuit breaker of each upstream: 0 closed, 1 open (requests skip it), 2 half-open (probing).",
			ConstLabels: prometheus.Labels{"upstream": u.name},
		}, func() float64 { return float64(u.breaker.current()) }))
		for _, kind := range []string{"narinfo", "nar"} {
			m.requests.WithLabelValues(u.name, kind, "ok")
		}
	}
	return m
}

func (m *metrics) request(u *upstream, kind, result string) {
	m.requests.WithLabelValues(u.name, kind, result).Inc()
}

// Collectors are the metrics to register.
func (p *Puller) Collectors() []prometheus.Collector {
	m := p.metrics
	out := append([]prometheus.Collector{m.requests, m.refused, m.bytes, m.negativeHits}, m.breakerState...)
	return append(out, m.pulledHits...)
}
