package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/token"
)

// benchBroker serves one fixed access token, as the real broker does on a memory hit, so the
// benchmark measures the HTTP layer alone (the broker has its own benchmark).
type benchBroker struct{ t token.Token }

func (b *benchBroker) Token(_ context.Context, k token.Key) (token.Token, error) {
	if k.Kind != token.AccessToken {
		return token.Token{}, broker.ErrTicketDisabled
	}
	return b.t, nil
}
func (b *benchBroker) Invalidate(context.Context, string, string) (token.Token, error) {
	return b.t, nil
}
func (b *benchBroker) Status() []broker.AppStatus { return nil }
func (b *benchBroker) Ready() bool                { return true }
func (b *benchBroker) StoreUp() bool              { return true }

// discardWriter is a reusable http.ResponseWriter that keeps only the status and the byte count, so
// the benchmark counts the handler's allocations and not a recorder's.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

// reset clears the writer for the next request, keeping the header map (net/http reuses nothing of
// the kind, but it allocates its header map per request outside the handler too).
func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

const (
	benchKey = "tkd_bench-client-key-0123456789abcdefghijklmnopqrstuv"
	// benchToken has the length of a real DingTalk access token (32 hex digits).
	benchToken = "0123456789abcdef0123456789abcdef"
)

// newBenchAPI builds the client API as cmd/tokend does, with a registry for the HTTP metrics and
// clients configured besides the one used, so authentication compares every hash as in production.
func newBenchAPI(b *testing.B, clients int) http.Handler {
	b.Helper()
	at := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	cl := []httpapi.Client{{Name: "bench", KeySHA256: config.HashKey(benchKey), Apps: []string{"crm"}}}
	for i := 1; i < clients; i++ {
		cl = append(cl, httpapi.Client{Name: "other", KeySHA256: config.HashKey(benchKey + strconv.Itoa(i)), Apps: []string{"*"}})
	}
	reg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Options{
		Broker:     &benchBroker{t: token.Token{Value: benchToken, ExpiresAt: at.Add(6543 * time.Second)}},
		Apps:       []httpapi.App{{Name: "crm", Type: "dingtalk"}},
		Clients:    cl,
		Now:        func() time.Time { return at },
		Registerer: reg,
		Gatherer:   reg,
	})
	if err != nil {
		b.Fatal(err)
	}
	return api.Handler()
}

func benchRequest(b *testing.B) *http.Request {
	b.Helper()
	req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, "http://tokend/v1/apps/crm/access_token", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+benchKey)
	return req
}

// BenchmarkGetAccessToken is the hot handler: an authenticated GET /v1/apps/{app}/access_token served
// from memory, through the whole client router (metrics, panic recovery, no-store, authentication,
// route, JSON body), without the network.
func BenchmarkGetAccessToken(b *testing.B) {
	for _, clients := range []int{1, 100} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			h := newBenchAPI(b, clients)
			tmpl := benchRequest(b)
			req := new(http.Request)
			*req = *tmpl
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatalf("status %d, want 200", w.status)
			}
			b.SetBytes(int64(w.n))
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				*req = *tmpl // a fresh request, as net/http makes one per request: no path values yet
				h.ServeHTTP(w, req)
			}
			if w.status != http.StatusOK {
				b.Fatalf("status %d, want 200", w.status)
			}
		})
	}
}

// BenchmarkGetAccessTokenParallel is BenchmarkGetAccessToken from every core at once: it shows
// contention on what the requests share (the metrics children, the configuration pointer).
func BenchmarkGetAccessTokenParallel(b *testing.B) {
	h := newBenchAPI(b, 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tmpl := benchRequest(b)
		req := new(http.Request)
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			w.reset()
			*req = *tmpl
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Errorf("status %d, want 200", w.status)
				return
			}
		}
	})
}

// BenchmarkUnauthenticated is the cost of turning away a request with an unknown key (401): what a
// client with a wrong key, or an attacker, costs the server.
func BenchmarkUnauthenticated(b *testing.B) {
	h := newBenchAPI(b, 10)
	req := benchRequest(b)
	req.Header.Set("Authorization", "Bearer tkd_not-a-configured-key")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, req)
	}
	if w.status != http.StatusUnauthorized {
		b.Fatalf("status %d, want 401", w.status)
	}
}
