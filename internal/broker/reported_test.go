package broker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// hookStore wraps a Memory store with hooks on single operations.
type hookStore struct {
	*store.Memory
	tryLock func(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error)
	get     func(ctx context.Context, k token.Key) (token.Record, bool, error)
	spends  atomic.Int64
}

func (h *hookStore) TryLock(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error) {
	if h.tryLock != nil {
		return h.tryLock(ctx, k, owner, ttl)
	}
	return h.Memory.TryLock(ctx, k, owner, ttl)
}

func (h *hookStore) Get(ctx context.Context, k token.Key) (token.Record, bool, error) {
	if h.get != nil {
		return h.get(ctx, k)
	}
	return h.Memory.Get(ctx, k)
}

func (h *hookStore) Spend(ctx context.Context, name string, limit int, window time.Duration) (time.Duration, error) {
	h.spends.Add(1)
	return h.Memory.Spend(ctx, name, limit, window)
}

// TestTicketLockOutlivesTheTokenRefreshInsideIt: a ticket refresh holds the ticket's lock while it
// first waits for the app's access token, a whole refresh of its own. The ticket lock must not lapse
// meanwhile (it lived one DingTalk call plus 5 s), or another replica makes the same ticket call.
func TestTicketLockOutlivesTheTokenRefreshInsideIt(t *testing.T) {
	clk := newClock()
	st := store.NewMemory(store.MemoryOptions{Now: clk.Now}) // lock lifetimes follow clk
	up := newUpstream(2 * time.Hour)
	up.now = clk.Now
	gate := up.hold()
	ticketApps := apps("crm")
	ticketApps[0].JSAPITicket = true
	b := newBroker(t, st, up, broker.Options{Now: clk.Now, Apps: ticketApps, UpstreamTimeout: 10 * time.Second})
	done := make(chan error, 1)
	go func() { _, err := b.Token(context.Background(), crmTicket); done <- err }()
	<-up.entered // the access-token call inside the ticket refresh
	clk.Add(20 * time.Second)
	if got, err := st.TryLock(t.Context(), crmTicket, "another-replica", time.Minute); err != nil || got {
		t.Errorf("another replica took the ticket lock while its holder still works (got=%v err=%v)", got, err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestTimedOutTryLockLeavesNoOrphanLock: the store set the lock but its answer did not come back in
// time. The replica goes on alone and must not leave the lock behind for the others to wait out.
func TestTimedOutTryLockLeavesNoOrphanLock(t *testing.T) {
	st := &hookStore{Memory: store.NewMemory(store.MemoryOptions{})}
	st.tryLock = func(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error) {
		_, _ = st.Memory.TryLock(ctx, k, owner, ttl)
		return false, context.DeadlineExceeded
	}
	b := newBroker(t, st, newUpstream(2*time.Hour), broker.Options{})
	if _, err := b.Token(t.Context(), crm); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Memory.TryLock(t.Context(), crm, "another-replica", time.Minute); err != nil || !got {
		t.Fatalf("the lock is still held after the timed-out TryLock (got=%v err=%v): an orphan for its TTL", got, err)
	}
}

// TestOneSlowStoreOperationKeepsTheLock: one store operation times out. That refresh may go alone,
// but the replica does not drop into lock-less mode for all the others.
func TestOneSlowStoreOperationKeepsTheLock(t *testing.T) {
	st := &hookStore{Memory: store.NewMemory(store.MemoryOptions{})}
	var slow atomic.Bool
	slow.Store(true)
	st.get = func(ctx context.Context, k token.Key) (token.Record, bool, error) {
		if slow.CompareAndSwap(true, false) {
			return token.Record{}, false, context.DeadlineExceeded
		}
		return st.Memory.Get(ctx, k)
	}
	reg := prometheus.NewRegistry()
	b := newBroker(t, st, newUpstream(2*time.Hour), broker.Options{Registerer: reg, Apps: apps("crm", "hr")})
	if _, err := b.Token(t.Context(), crm); err != nil {
		t.Fatal(err)
	}
	if !b.StoreUp() {
		t.Fatal("one slow store operation marked the store down")
	}
	if _, err := b.Token(t.Context(), token.Key{App: "hr", Kind: token.AccessToken}); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "tokend_lock_acquisitions_total", "acquired"); n < 1 {
		t.Fatalf("the next refresh took no lock (acquired=%v)", n)
	}
}

// TestTicketFailureOnlyWhenATicketCallFailed: the app's credentials are rejected, so the ticket
// refresh cannot get an access token and makes no ticket call. Its callers get the token's error, but
// no ticket failure is audited or noted for the other replicas.
func TestTicketFailureOnlyWhenATicketCallFailed(t *testing.T) {
	st := store.NewMemory(store.MemoryOptions{})
	up := newUpstream(2 * time.Hour)
	up.fail(&dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: "invalidClientIdOrSecret", Class: dingtalk.ClassCredentials})
	ticketApps := apps("crm")
	ticketApps[0].JSAPITicket = true
	var mu sync.Mutex
	var events []broker.RefreshEvent
	b := newBroker(t, st, up, broker.Options{Apps: ticketApps, OnRefresh: func(ev broker.RefreshEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	if _, err := b.Token(t.Context(), crmTicket); err == nil {
		t.Fatal("want the token's failure")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		if ev.Key.Kind == token.JSAPITicket {
			t.Errorf("a ticket refresh event with no ticket call: %+v", ev)
		}
	}
	if _, _, ok, _ := st.GetNote(t.Context(), "backoff:crm:jsapi_ticket"); ok {
		t.Error("a ticket back-off note with no ticket call")
	}
}

// TestWaitingReplicaSpendsTheBudgetOnce: a replica waiting on another's lock goes round its loop
// each time the record changes without satisfying it; it takes one unit of the shared budget per
// refresh, not one per round.
func TestWaitingReplicaSpendsTheBudgetOnce(t *testing.T) {
	clk := newClock()
	st := &hookStore{Memory: store.NewMemory(store.MemoryOptions{Now: clk.Now})}
	reg := prometheus.NewRegistry()
	b := newBroker(t, st, newUpstream(2*time.Hour), broker.Options{Now: clk.Now, Registerer: reg})
	if got, err := st.Memory.TryLock(t.Context(), crm, "another-replica", time.Hour); err != nil || !got {
		t.Fatal("setup: lock")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() { _, _ = b.Token(ctx, crm); close(done) }()
	// Records the waiter reads but that do not end its need (already in the refresh window).
	for gen := int64(0); gen < 3; gen++ {
		waitFor(t, "the waiter to find the lock taken", 5*time.Second, func() bool {
			return counterValue(t, reg, "tokend_lock_acquisitions_total", "contended") >= float64(gen+1)
		})
		now := clk.Now()
		if _, ok, err := st.Put(t.Context(), crm, gen, token.Token{Value: "tok", ExpiresAt: now.Add(time.Minute).Add(time.Duration(gen) * time.Second),
			FirstSeen: now, FetchedAt: now.Add(-2 * time.Hour)}); err != nil || !ok {
			t.Fatalf("setup: put %d", gen)
		}
	}
	waitFor(t, "another round", 5*time.Second, func() bool {
		return counterValue(t, reg, "tokend_lock_acquisitions_total", "contended") >= 4
	})
	cancel()
	<-done
	if n := st.spends.Load(); n != 1 {
		t.Fatalf("the waiting replica spent %d units of the shared budget for one refresh, want 1", n)
	}
}

// TestUpstreamCodeLabelIsBounded: DingTalk's code becomes the metric's label only when tokend knows
// it; any other is "other", so the label's values stay a bounded set.
func TestUpstreamCodeLabelIsBounded(t *testing.T) {
	for code, want := range map[string]string{
		"systemBusy":                 "systemBusy",
		"invalidClientIdOrSecret":    "invalidClientIdOrSecret",
		"some.new.code-4f1e9a0c2b7d": "other",
	} {
		up := newUpstream(2 * time.Hour)
		class := dingtalk.ClassUnavailable
		if code == "invalidClientIdOrSecret" {
			class = dingtalk.ClassCredentials
		}
		up.fail(&dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: code, Class: class})
		reg := prometheus.NewRegistry()
		b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{Registerer: reg})
		_, _ = b.Token(t.Context(), crm)
		if got := labelValues(t, reg, "tokend_upstream_requests_total", "code"); len(got) != 1 || got[0] != want {
			t.Errorf("code %q: labels %q, want [%q]", code, got, want)
		}
	}
}

// TestRemovedAppLeavesNoSeries: once an app is removed by a reload, none of its per-app series stay.
func TestRemovedAppLeavesNoSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), newUpstream(2*time.Hour), broker.Options{Registerer: reg, Apps: apps("crm", "hr")})
	hr := token.Key{App: "hr", Kind: token.AccessToken}
	tok, err := b.Token(t.Context(), hr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Invalidate(t.Context(), "hr", tok.Value); err != nil {
		t.Fatal(err)
	}
	b.Reload(t.Context(), apps("crm"))
	for _, v := range labelValues(t, reg, "", "app") {
		if v == "hr" {
			t.Fatal("series of the removed app hr remain")
		}
	}
}

// labelValues returns the values of label in the families called name ("" for all) of reg.
func labelValues(t *testing.T, reg *prometheus.Registry, name, label string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if name != "" && mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	return out
}
