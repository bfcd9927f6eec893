package httpapi

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/token"
)

// TestChainRecoversPanics: a handler panic becomes a 500 problem counted under the route's pattern,
// logged with the route only (never the request's key); the writer goes back to the pool and the
// next request is served normally. http.ErrAbortHandler is net/http's own signal and passes through.
func TestChainRecoversPanics(t *testing.T) {
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	a, err := New(Options{Broker: nopBroker{}, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const pattern = "/v1/apps/{app}/access_token"
	boom := true
	h := a.chain(pattern, func(w http.ResponseWriter, _ *http.Request) {
		if boom {
			panic("boom")
		}
		w.WriteHeader(http.StatusNoContent)
	})
	req := httptest.NewRequest(http.MethodGet, "/v1/apps/crm/access_token", nil)
	req.Header.Set("Authorization", "Bearer tkd_secret-key-that-must-not-be-logged")

	w := httptest.NewRecorder()
	h(w, req)
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Header().Get("Content-Type"), "problem+json") {
		t.Fatalf("panic answered %d %q, want 500 problem", w.Code, w.Header().Get("Content-Type"))
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", w.Header().Get("Cache-Control"))
	}
	if !strings.Contains(logs.String(), "handler panic") || !strings.Contains(logs.String(), pattern) {
		t.Errorf("log %q: want the panic with its route", logs.String())
	}
	if strings.Contains(logs.String(), "tkd_secret") || strings.Contains(logs.String(), "boom") {
		t.Errorf("log %q carries the request or the panic value", logs.String())
	}
	if got := testutil.ToFloat64(a.m.requests.WithLabelValues(pattern, "500")); got != 1 {
		t.Errorf("tokend_http_requests_total{code=500} = %v, want 1", got)
	}

	boom = false
	w = httptest.NewRecorder()
	h(w, req)
	if w.Code != http.StatusNoContent {
		t.Fatalf("after a panic: %d, want 204", w.Code)
	}

	abort := a.chain(pattern, func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler to pass through", v)
		}
	}()
	abort(httptest.NewRecorder(), req)
	t.Fatal("http.ErrAbortHandler was swallowed")
}

// nopBroker is a Broker for tests that never reach it.
type nopBroker struct{}

func (nopBroker) Token(context.Context, token.Key) (token.Token, error) { return token.Token{}, nil }
func (nopBroker) Invalidate(context.Context, string, string) (token.Token, error) {
	return token.Token{}, nil
}
func (nopBroker) Status() []broker.AppStatus { return nil }
func (nopBroker) Ready() bool                { return true }
func (nopBroker) StoreUp() bool              { return true }
