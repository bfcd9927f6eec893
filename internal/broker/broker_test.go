package broker_test

import (
	"context"
	"errors"
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

// stampede sends n concurrent requests for key, round-robin over bs, and returns the values received.
func stampede(t *testing.T, n int, key token.Key, bs ...*broker.Broker) []string {
	t.Helper()
	values := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tok, err := bs[i%len(bs)].Token(t.Context(), key)
			values[i], errs[i] = tok.Value, err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return values
}

func TestColdStampedeOneProcessMakesOneUpstreamCall(t *testing.T) {
	up := newUpstream(2 * time.Hour)
	gate := up.hold()
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})

	result := make(chan []string)
	go func() { result <- stampede(t, 200, crm, b) }()
	<-up.entered // the first request reached DingTalk; the others queue behind it or arrive later
	close(gate)
	values := <-result

	if got := up.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1", got)
	}
	for _, v := range values {
		if v != values[0] {
			t.Fatalf("requests got different tokens: %q and %q", v, values[0])
		}
	}
}

func TestColdStampedeThreeReplicasSharingMemoryStore(t *testing.T) {
	testColdStampedeThreeReplicas(t, store.NewMemory(store.MemoryOptions{}))
}

// testColdStampedeThreeReplicas runs three brokers (each with its own handle on one shared store)
// through their warm-up while 300 requests arrive, and checks DingTalk saw one call.
func testColdStampedeThreeReplicas(t *testing.T, stores ...broker.Store) {
	up := newUpstream(2 * time.Hour)
	gate := up.hold()
	var bs []*broker.Broker
	for i := range 3 {
		b := newBroker(t, stores[min(i, len(stores)-1)], up, broker.Options{})
		bs = append(bs, b)
		run(t, b)
	}
	result := make(chan []string)
	go func() { result <- stampede(t, 300, crm, bs...) }()
	<-up.entered
	close(gate)
	values := <-result
	for _, b := range bs {
		waitFor(t, "warm-up", 5*time.Second, b.Ready)
	}
	if got := up.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1", got)
	}
	for _, v := range values {
		if v != values[0] {
			t.Fatalf("replicas handed out different tokens: %q and %q", v, values[0])
		}
	}
}

// clock is a settable clock for tests that move time by hand.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func TestReplicaThatLostItsLockCannotOverwriteNewerToken(t *testing.T) {
	clk := newClock()
	st := store.NewMemory(store.MemoryOptions{Now: clk.Now})
	slow := newUpstream(2 * time.Hour)
	slow.now = clk.Now
	gate := slow.hold()
	a := newBroker(t, st, slow, broker.Options{Now: clk.Now, UpstreamTimeout: 30 * time.Second})

	resA := make(chan token.Token, 1)
	go func() {
		tok, err := a.Token(t.Context(), crm)
		if err != nil {
			t.Error(err)
		}
		resA <- tok
	}()
	<-slow.entered // A holds the lock and is inside its DingTalk call

	clk.Add(time.Minute) // A's lock (35 s) lapses while its call hangs
	fast := newUpstream(2 * time.Hour)
	fast.now = clk.Now
	b := newBroker(t, st, fast, broker.Options{Now: clk.Now, UpstreamTimeout: 30 * time.Second})
	newer, err := b.Token(t.Context(), crm)
	if err != nil {
		t.Fatal(err)
	}
	close(gate) // A's call returns now, with a value fetched before B's
	gotA := <-resA

	rec, ok, err := st.Get(t.Context(), crm)
	if err != nil || !ok {
		t.Fatalf("store: ok=%v err=%v", ok, err)
	}
	if rec.Value != newer.Value {
		t.Fatalf("store holds %q, want the newer token %q", rec.Value, newer.Value)
	}
	if gotA.Value != newer.Value {
		t.Fatalf("replica A serves %q, want the newer token %q it lost to", gotA.Value, newer.Value)
	}
	if rec.Generation != 1 {
		t.Fatalf("generation = %d, want 1 (A's write must have been refused)", rec.Generation)
	}
}

func TestValidTokenServedFromMemoryWithoutStoreOrUpstream(t *testing.T) {
	up := newUpstream(2 * time.Hour)
	st := &flakyStore{Memory: store.NewMemory(store.MemoryOptions{})}
	b := newBroker(t, st, up, broker.Options{})
	first, err := b.Token(t.Context(), crm)
	if err != nil {
		t.Fatal(err)
	}
	callsBefore, opsBefore := up.calls.Load(), st.ops.Load()
	for range 1000 {
		tok, err := b.Token(t.Context(), crm)
		if err != nil || tok.Value != first.Value {
			t.Fatalf("got %q, %v", tok.Value, err)
		}
	}
	if up.calls.Load() != callsBefore || st.ops.Load() != opsBefore {
		t.Fatalf("hits caused %d upstream calls and %d store operations, want 0 and 0",
			up.calls.Load()-callsBefore, st.ops.Load()-opsBefore)
	}
}

func TestProactiveRefreshBeforeExpiryWithoutClientsWaiting(t *testing.T) {
	up := newUpstream(3 * time.Second) // margin = half the lifetime: refresh ~1.5 s before expiry
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})
	run(t, b)
	waitFor(t, "warm-up", 5*time.Second, b.Ready)
	first, err := b.Token(t.Context(), crm)
	if err != nil {
		t.Fatal(err)
	}
	// Clients ask continuously across three refresh cycles: every answer must be valid when given,
	// and no request may cause an upstream call of its own.
	var served, bad atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok, err := b.Token(t.Context(), crm)
				if err != nil || !tok.Valid(time.Now()) {
					bad.Add(1)
				}
				served.Add(1)
				time.Sleep(100 * time.Microsecond) // pace the clients; not synchronisation
			}
		})
	}
	last := first
	for cycle := range 3 {
		waitFor(t, "proactive refresh", 5*time.Second, func() bool {
			tok, _ := b.Token(t.Context(), crm)
			if tok.ExpiresAt.After(last.ExpiresAt) {
				if time.Now().After(last.ExpiresAt) {
					t.Errorf("cycle %d: refreshed only after the old token expired", cycle)
				}
				last = tok
				return true
			}
			return false
		})
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d client requests got an error or an expired token", bad.Load(), served.Load())
	}
	if got := up.calls.Load(); got != 4 {
		t.Fatalf("upstream calls = %d, want 4 (warm-up + 3 refreshes)", got)
	}
}

func TestRetryableOutageShorterThanTokenLifeCostsNoClientError(t *testing.T) {
	up := newUpstream(8 * time.Second) // refresh window opens 4 s after each fetch
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})
	run(t, b)
	waitFor(t, "warm-up", 5*time.Second, b.Ready)
	first, _ := b.Token(t.Context(), crm)
	up.fail(&dingtalk.Error{Family: dingtalk.FamilyNew, Status: 503, Code: "systemBusy", Class: dingtalk.ClassUnavailable})
	outageEnds := first.ExpiresAt.Add(-8 * time.Second).Add(5500 * time.Millisecond)

	var errs, served atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if time.Now().After(outageEnds) {
				up.fail(nil)
			}
			tok, err := b.Token(t.Context(), crm)
			served.Add(1)
			if err != nil || !tok.Valid(time.Now()) {
				errs.Add(1)
			}
			if tok.ExpiresAt.After(first.ExpiresAt) {
				return
			}
			if time.Now().After(first.ExpiresAt.Add(2 * time.Second)) {
				t.Error("no new token after the outage ended")
				return
			}
			time.Sleep(2 * time.Millisecond) // pace the client; not synchronisation
		}
	}()
	<-done
	if errs.Load() != 0 {
		t.Fatalf("%d of %d requests failed during a 1.5 s outage inside the margin", errs.Load(), served.Load())
	}
	// Bound: the window opens at 4 s (plus up to 0.4 s of jitter) and the outage ends at 5.5 s; with
	// 4 s or less left, back-off waits 0.5–1 s. So at least one failed try, at most four, then one
	// success, after the warm-up's call.
	if got := up.calls.Load(); got < 3 || got > 6 {
		t.Fatalf("upstream calls = %d, want 3..6", got)
	}
}

func TestRejectedCredentialsFailFastWithoutMoreUpstreamCalls(t *testing.T) {
	up := newUpstream(2 * time.Hour)
	up.fail(&dingtalk.Error{Family: dingtalk.FamilyLegacy, Status: 200, Code: "40096", Class: dingtalk.ClassCredentials})
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})
	for range 5 {
		_, err := b.Token(t.Context(), crm)
		var rej *broker.RejectedError
		if !errors.As(err, &rej) || rej.Code != "40096" {
			t.Fatalf("err = %v, want RejectedError with code 40096", err)
		}
	}
	if got := up.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1 (later requests must not call DingTalk)", got)
	}
	st := b.Status()[0].AccessToken
	if st.State != broker.StateFailing || st.UpstreamCode != "40096" {
		t.Fatalf("status = %+v", st)
	}
}

func TestUnknownAppAndDisabledTicket(t *testing.T) {
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), newUpstream(time.Hour), broker.Options{})
	if _, err := b.Token(t.Context(), token.Key{App: "nope", Kind: token.AccessToken}); !errors.Is(err, broker.ErrUnknownApp) {
		t.Fatalf("err = %v, want ErrUnknownApp", err)
	}
	if _, err := b.Token(t.Context(), token.Key{App: "crm", Kind: token.JSAPITicket}); !errors.Is(err, broker.ErrTicketDisabled) {
		t.Fatalf("err = %v, want ErrTicketDisabled", err)
	}
}

// flakyStore wraps a Memory store; while down, every operation fails like an unreachable Redis.
type flakyStore struct {
	*store.Memory
	down atomic.Bool
	ops  atomic.Int64
}

var errDown = errors.New("connection refused")

func (f *flakyStore) check() error {
	f.ops.Add(1)
	if f.down.Load() {
		return errDown
	}
	return nil
}
func (f *flakyStore) Get(ctx context.Context, k token.Key) (token.Record, bool, error) {
	if err := f.check(); err != nil {
		return token.Record{}, false, err
	}
	return f.Memory.Get(ctx, k)
}
func (f *flakyStore) Put(ctx context.Context, k token.Key, gen int64, t token.Token) (token.Record, bool, error) {
	if err := f.check(); err != nil {
		return token.Record{}, false, err
	}
	return f.Memory.Put(ctx, k, gen, t)
}
func (f *flakyStore) TryLock(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error) {
	if err := f.check(); err != nil {
		return false, err
	}
	return f.Memory.TryLock(ctx, k, owner, ttl)
}
func (f *flakyStore) Unlock(ctx context.Context, k token.Key, owner string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Memory.Unlock(ctx, k, owner)
}
func (f *flakyStore) GetNote(ctx context.Context, name string) (string, time.Duration, bool, error) {
	if err := f.check(); err != nil {
		return "", 0, false, err
	}
	return f.Memory.GetNote(ctx, name)
}
func (f *flakyStore) SetNote(ctx context.Context, name, value string, ttl time.Duration) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Memory.SetNote(ctx, name, value, ttl)
}
func (f *flakyStore) Ping(ctx context.Context) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Memory.Ping(ctx)
}

func TestStoreOutageServesFromMemoryRefreshesAloneAndWritesBack(t *testing.T) {
	up := newUpstream(1200 * time.Millisecond)
	up.same = true
	st := &flakyStore{Memory: store.NewMemory(store.MemoryOptions{})}
	b := newBroker(t, st, up, broker.Options{})
	run(t, b)
	waitFor(t, "warm-up", 5*time.Second, b.Ready)
	first, _ := b.Token(t.Context(), crm)

	st.down.Store(true)
	// While the store is down, the replica refreshes on its own before the token expires.
	var alone token.Token
	waitFor(t, "refresh while the store is down", 3*time.Second, func() bool {
		tok, err := b.Token(t.Context(), crm)
		if err != nil {
			t.Fatalf("request failed while the store was down: %v", err)
		}
		alone = tok
		return tok.ExpiresAt.After(first.ExpiresAt)
	})
	if b.StoreUp() {
		t.Fatal("StoreUp() = true during the outage")
	}
	st.down.Store(false)
	waitFor(t, "write-back", 5*time.Second, func() bool {
		rec, ok, _ := st.Memory.Get(t.Context(), crm)
		return ok && !rec.ExpiresAt.Before(alone.ExpiresAt)
	})
	if !b.StoreUp() {
		t.Fatal("StoreUp() = false after the store returned")
	}
}

func TestIPBanPausesEveryReplicaForFiveMinutes(t *testing.T) {
	clk := newClock()
	st := store.NewMemory(store.MemoryOptions{Now: clk.Now})
	up := newUpstream(2 * time.Hour)
	up.now = clk.Now
	up.fail(&dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 403, Code: "ip_ban", Class: dingtalk.ClassBanned})
	opts := broker.Options{Now: clk.Now, Apps: apps("crm", "hr")}
	a, b := newBroker(t, st, up, opts), newBroker(t, st, up, opts)

	var un *broker.UnavailableError
	if _, err := a.Token(t.Context(), crm); !errors.As(err, &un) {
		t.Fatalf("banned call: err = %v, want UnavailableError", err)
	}
	up.fail(nil) // the ban page came once; DingTalk would keep answering it for 5 minutes
	hr := token.Key{App: "hr", Kind: token.AccessToken}
	for _, step := range []time.Duration{0, time.Minute, 3 * time.Minute} {
		clk.Add(step)
		for _, br := range []*broker.Broker{a, b} {
			for _, k := range []token.Key{crm, hr} {
				if _, err := br.Token(t.Context(), k); !errors.As(err, &un) || un.RetryAfter <= 0 {
					t.Fatalf("during the ban: err = %v, want UnavailableError with Retry-After", err)
				}
			}
		}
	}
	if got := up.calls.Load(); got != 1 {
		t.Fatalf("upstream calls during the ban = %d, want only the banned one", got)
	}
	clk.Add(2 * time.Minute) // 6 minutes after the ban, past its jitter
	for _, br := range []*broker.Broker{a, b} {
		if _, err := br.Token(t.Context(), hr); err != nil {
			t.Fatalf("after the ban: %v", err)
		}
	}
}

func TestWaiterTakesOverALockReleasedWithoutAWrite(t *testing.T) {
	st := store.NewMemory(store.MemoryOptions{})
	reg := prometheus.NewRegistry()
	up := newUpstream(2 * time.Hour)
	b := newBroker(t, st, up, broker.Options{UpstreamTimeout: 30 * time.Second, Registerer: reg}) // lock TTL 35 s
	// Another replica holds the lock, as if it were mid-refresh.
	if got, err := st.TryLock(t.Context(), crm, "other-replica", time.Minute); !got || err != nil {
		t.Fatalf("TryLock: %v %v", got, err)
	}
	done := make(chan error, 1)
	go func() { _, err := b.Token(t.Context(), crm); done <- err }()
	waitFor(t, "the request to find the lock taken", 5*time.Second, func() bool {
		return counterValue(t, reg, "tokend_lock_acquisitions_total", "contended") >= 1
	})
	// The holder shuts down: its call is cut short and it releases the lock without writing.
	if err := st.Unlock(t.Context(), crm, "other-replica"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting replica did not take over a released lock well before its 35 s lapse")
	}
	if up.calls.Load() != 1 {
		t.Fatalf("upstream calls = %d, want 1", up.calls.Load())
	}
}

// counterValue reads one labelled series of a counter family from reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
