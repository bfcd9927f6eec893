package broker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/dingtalk"
)

// metrics are the broker's Prometheus collectors; names and labels are part of the contract.
type metrics struct {
	expiry        *prometheus.GaugeVec
	state         *prometheus.GaugeVec
	refresh       *prometheus.CounterVec
	upstream      *prometheus.CounterVec
	upstreamDur   *prometheus.HistogramVec
	invalidations *prometheus.CounterVec
	locks         *prometheus.CounterVec
	storeUp       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokend_token_expiry_timestamp_seconds",
			Help: "When the credential this replica serves expires (Unix seconds).",
		}, []string{"app", "kind"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokend_app_state",
			Help: "Always 1, labelled with the credential's current state (ok, refreshing, failing).",
		}, []string{"app", "kind", "state"}),
		refresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_refresh_total",
			Help: "Refreshes by result: success (fetched and stored), shared (another replica's value was current), failure.",
		}, []string{"app", "kind", "result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_upstream_requests_total",
			Help: "Calls to DingTalk by app, kind and result code (ok, or DingTalk's code, or timeout/network/http_<status>/ip_ban/bad_response).",
		}, []string{"app", "kind", "code"}),
		upstreamDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokend_upstream_request_duration_seconds",
			Help:    "Duration of calls to DingTalk.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_invalidations_total",
			Help: "Invalidation reports by result: refreshed, unchanged (DingTalk returned the same token), stale (an older token was reported), cooldown, error.",
		}, []string{"app", "result"}),
		locks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_lock_acquisitions_total",
			Help: "Attempts to take a refresh lock by result: acquired, contended, error.",
		}, []string{"result"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokend_store_up",
			Help: "1 while the shared store answers, 0 while this replica serves from memory alone.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.expiry, m.state, m.refresh, m.upstream, m.upstreamDur, m.invalidations, m.locks, m.storeUp} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("broker: register metrics: %w", err)
		}
	}
	return m, nil
}

// setState publishes e's state as the tokend_app_state gauge: one series per credential, labelled
// with the current state (the others are deleted, which keeps /metrics small with many apps).
func (b *Broker) setState(e *entry) {
	s := e.currentState()
	for _, st := range []State{StateOK, StateRefreshing, StateFailing} {
		if st != s {
			b.m.state.DeleteLabelValues(e.key.App, string(e.key.Kind), string(st))
		}
	}
	b.m.state.WithLabelValues(e.key.App, string(e.key.Kind), string(s)).Set(1)
}

// codeOther is the code label of a DingTalk code tokend does not know: the label's values stay a
// bounded set whatever DingTalk sends.
const codeOther = "other"

// busyCodes are DingTalk's codes for "busy, retry", the known codes that the client classifies as
// plainly unavailable (every other known code has a class of its own).
var busyCodes = map[string]bool{"-1": true, "systemBusy": true, "system.busy": true}

// codeLabel is the code label of a call's outcome: "ok", a code the client makes itself (timeout,
// network, http_<status>, ip_ban, bad_response, bad_request), a DingTalk code tokend knows, or
// codeOther.
func codeLabel(err error) string {
	var de *dingtalk.Error
	switch {
	case err == nil:
		return "ok"
	case !errors.As(err, &de):
		return "error"
	case de.Family == dingtalk.FamilyTransport:
		if n, ok := strings.CutPrefix(de.Code, "http_"); ok {
			if s, err := strconv.Atoi(n); err != nil || s < 100 || s > 599 {
				return codeOther
			}
		}
		return de.Code
	case de.Class != dingtalk.ClassUnavailable || busyCodes[de.Code]:
		// Classified, so one of the codes the client knows.
		return de.Code
	}
	return codeOther
}

// forget deletes every per-app series of app, once it is removed from the configuration.
func (m *metrics) forget(app string) {
	l := prometheus.Labels{"app": app}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{m.expiry, m.state, m.refresh, m.upstream, m.invalidations} {
		v.DeletePartialMatch(l)
	}
}
