package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics are tokend_http_requests_total and tokend_http_request_duration_seconds. The
// per-(route, status) children are cached so the hot path does no label hashing.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	cache    sync.Map // routeStatus -> *routeObservers
}

type routeStatus struct {
	route  string
	status int
}

type routeObservers struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_http_requests_total",
			Help: "Client API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokend_http_request_duration_seconds",
			Help:    "Client API request duration by route pattern.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05, .25, 1, 5, 10},
		}, []string{"route"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(route string, status int, d time.Duration) {
	k := routeStatus{route, status}
	o, ok := m.cache.Load(k)
	if !ok {
		o, _ = m.cache.LoadOrStore(k, &routeObservers{
			count:    m.requests.WithLabelValues(route, strconv.Itoa(status)),
			duration: m.duration.WithLabelValues(route),
		})
	}
	ro := o.(*routeObservers)
	ro.count.Inc()
	ro.duration.Observe(d.Seconds())
}

// routeMetrics are one route's series for status 200, bound on the route's first 200 (not at
// registration, so that /metrics shows only routes that served) and kept for every later one: the
// per-request path does no label hashing nor map lookup. Other statuses go through the cache.
type routeMetrics struct {
	m     *httpMetrics
	route string
	ok    atomic.Pointer[routeObservers]
}

func (m *httpMetrics) bind(route string) *routeMetrics { return &routeMetrics{m: m, route: route} }

func (rm *routeMetrics) observe(status int, d time.Duration) {
	o := rm.ok.Load()
	if o == nil || status != http.StatusOK {
		rm.m.observe(rm.route, status, d)
		if status == http.StatusOK {
			v, _ := rm.m.cache.Load(routeStatus{rm.route, status})
			rm.ok.Store(v.(*routeObservers))
		}
		return
	}
	o.count.Inc()
	o.duration.Observe(d.Seconds())
}
