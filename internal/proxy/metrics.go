package proxy

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the contract's proxy metrics. None has a path, client or corp label.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_proxy_requests_total",
			Help: "Proxied DingTalk calls by app, family and result (ok, DingTalk's code, http_<status>, timeout, network, rate_limited, ip_ban, too_large, bad_request, no_token, canceled).",
		}, []string{"app", "family", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokend_proxy_request_duration_seconds",
			Help:    "Duration of proxied DingTalk calls, retry and streaming included, by family.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"family"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_proxy_retries_total",
			Help: "Proxied calls sent again with a new token after DingTalk rejected the first, by app.",
		}, []string{"app"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.retries} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("proxy: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(t Target, out Outcome, d time.Duration) {
	m.requests.WithLabelValues(t.App, string(t.Family), out.Result).Inc()
	m.duration.WithLabelValues(string(t.Family)).Observe(d.Seconds())
}

func (m *metrics) retried(app string) { m.retries.WithLabelValues(app).Inc() }
