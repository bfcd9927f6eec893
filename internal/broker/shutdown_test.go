package broker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
)

// TestHolderShutdownIsNoUpstreamFailure: the replica holding the refresh lock shuts down while its
// DingTalk call is in flight. Its cancelled call is not DingTalk's answer: it writes no back-off note
// and audits no failure, and the replica waiting on the lock takes the refresh over and answers its
// client with a token.
func TestHolderShutdownIsNoUpstreamFailure(t *testing.T) {
	st := store.NewMemory(store.MemoryOptions{})
	var calls atomic.Int64
	dt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so the server notices the client going away
		if calls.Add(1) == 1 {
			<-r.Context().Done() // the holder's call hangs until the holder cuts it short
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"accessToken":"tok-1","expireIn":7200}`))
	}))
	t.Cleanup(dt.Close)
	up := dingtalk.New(dingtalk.Options{APIBase: dt.URL, OAPIBase: dt.URL})
	var mu sync.Mutex
	var events []broker.RefreshEvent
	holder := newBroker(t, st, up, broker.Options{OnRefresh: func(ev broker.RefreshEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	reg := prometheus.NewRegistry()
	waiter := newBroker(t, st, up, broker.Options{Registerer: reg})

	ctx, shutdown := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = holder.Run(ctx); close(stopped) }() // its warm-up takes the lock; the call hangs
	waitFor(t, "the holder's call", 5*time.Second, func() bool { return calls.Load() >= 1 })
	res := make(chan error, 1)
	go func() { _, err := waiter.Token(context.Background(), crm); res <- err }()
	waitFor(t, "the waiter to find the lock taken", 5*time.Second, func() bool {
		return counterValue(t, reg, "tokend_lock_acquisitions_total", "contended") >= 1
	})
	shutdown()
	<-stopped
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("the waiting replica's client got %v after the holder shut down", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting replica did not answer")
	}
	if _, _, ok, err := st.GetNote(t.Context(), "backoff:crm:access_token"); err != nil || ok {
		t.Errorf("back-off note after the holder's shutdown: present=%v err=%v, want none", ok, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		if ev.Result != "success" {
			t.Errorf("the shut-down holder audited %+v", ev)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("DingTalk calls = %d, want 2 (the cut one and the takeover)", n)
	}
}
