package broker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// duringCall is an upstream double that runs a hook at the start of every access-token call, while
// the caller holds the refresh lock.
type duringCall struct {
	*upstream
	hook atomic.Pointer[func()]
}

func (d *duringCall) AccessToken(ctx context.Context, app dingtalk.App) (dingtalk.Grant, error) {
	if f := d.hook.Load(); f != nil {
		(*f)()
	}
	return d.upstream.AccessToken(ctx, app)
}

// TestRecordLostDuringFetchIsWrittenAgainAndServed: the store loses the record while the lock holder
// calls DingTalk (Redis restarted empty, FLUSHALL, eviction), or a failover brings back an older,
// expired record. The fenced write is refused; the fetched token must still be written, as a new
// generation on top of what the store holds, and served. Never an empty value with a nil error.
func TestRecordLostDuringFetchIsWrittenAgainAndServed(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "loss", OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, tc := range []struct {
		name    string
		lose    func(t *testing.T, stale token.Token)
		wantGen int64
	}{
		{"flushed", func(*testing.T, token.Token) { _, _ = srv.Do("FLUSHALL") }, 1},
		{"older record back", func(t *testing.T, stale token.Token) {
			// A failover to a replica that missed the last write: an older, expired record at an
			// older generation.
			_, _ = srv.Do("FLUSHALL")
			if _, ok, err := st.Put(context.Background(), crm, 0, stale); err != nil || !ok {
				t.Errorf("planting the older record: ok=%v err=%v", ok, err)
			}
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _ = srv.Do("FLUSHALL")
			clk := newClock()
			clk.ns.Store(time.Now().UnixNano()) // Redis drops records by its own clock
			up := &duringCall{upstream: newUpstream(2 * time.Hour)}
			up.now = clk.Now
			b := newBroker(t, st, up, broker.Options{Now: clk.Now})
			first, err := b.Token(t.Context(), crm)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // generations 2 and 3: the record the store then loses is not the first
				clk.Add(2 * time.Hour)
				if _, err := b.Token(t.Context(), crm); err != nil {
					t.Fatal(err)
				}
			}
			clk.Add(2 * time.Hour) // expired: the next request refreshes
			lose := func() { tc.lose(t, first) }
			up.hook.Store(&lose)
			got, err := b.Token(t.Context(), crm)
			up.hook.Store(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Valid(clk.Now()) {
				t.Fatalf("served %+v, want a valid token", got)
			}
			rec, ok, err := st.Get(t.Context(), crm)
			if err != nil || !ok {
				t.Fatalf("store: ok=%v err=%v", ok, err)
			}
			if rec.Value != got.Value || rec.Generation != tc.wantGen {
				t.Fatalf("store holds generation %d (same value as served: %t), want the served token as generation %d",
					rec.Generation, rec.Value == got.Value, tc.wantGen)
			}
			if again, err := b.Token(t.Context(), crm); err != nil || again.Value != got.Value {
				t.Fatalf("next request: %v (same token: %t)", err, again.Value == got.Value)
			}
		})
	}
}
