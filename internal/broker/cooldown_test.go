package broker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
)

// TestCooldownIsPerTokenValue: the cool-down after a report applies to the value DingTalk handed back
// unchanged, on every replica; a new token revoked moments after it was issued is checked at once.
func TestCooldownIsPerTokenValue(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) broker.Store{
		"memory": func(*testing.T) broker.Store { return store.NewMemory(store.MemoryOptions{}) },
		"redis":  func(t *testing.T) broker.Store { return redisHandles(t, 1)[0] },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			up := newUpstream(2 * time.Hour)
			a := newBroker(t, st, up, broker.Options{})
			b := newBroker(t, st, up, broker.Options{})
			first, err := a.Token(t.Context(), crm)
			if err != nil {
				t.Fatal(err)
			}
			// DingTalk revoked it: the report gets a new token...
			up.revoke("crm")
			second, err := a.Invalidate(t.Context(), "crm", first.Value)
			if err != nil || second.Value == first.Value {
				t.Fatalf("first report: %v (new token: %t)", err, second.Value != first.Value)
			}
			// ...which DingTalk revokes at once too: its report, seconds later, is checked, not refused.
			up.revoke("crm")
			third, err := b.Invalidate(t.Context(), "crm", second.Value)
			if err != nil || third.Value == second.Value {
				t.Fatalf("report of a new token moments after it was issued: %v (new token: %t), want it replaced", err, third.Value != second.Value)
			}
			// DingTalk hands the third back unchanged: further reports of it, on any replica, get 429.
			if got, err := a.Invalidate(t.Context(), "crm", third.Value); err != nil || got.Value != third.Value {
				t.Fatalf("report answered with the same token: %v", err)
			}
			calls := up.calls.Load()
			for _, r := range []*broker.Broker{a, b} {
				_, err := r.Invalidate(t.Context(), "crm", third.Value)
				var cd *broker.CooldownError
				if !errors.As(err, &cd) || cd.RetryAfter <= 0 || cd.RetryAfter > 30*time.Second {
					t.Fatalf("repeated report of the token just checked: %v, want CooldownError with 0 < RetryAfter <= 30s", err)
				}
			}
			if n := up.calls.Load() - calls; n != 0 {
				t.Fatalf("repeated reports cost %d DingTalk calls, want 0", n)
			}
		})
	}
}

// TestInvalidationDedupeSurvivesEmptyStore: Redis restarts empty, so generations start again at 1
// while the replicas remember higher ones. Two replicas get concurrent reports of the same token and
// DingTalk hands it back unchanged: one DingTalk call in all, both reporters get the token.
func TestInvalidationDedupeSurvivesEmptyStore(t *testing.T) {
	srv := redistest.Start(t)
	open := func() broker.Store {
		s, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "dedupe", OpTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	clk := newClock()
	clk.ns.Store(time.Now().UnixNano())
	up := newUpstream(2 * time.Hour)
	up.now = clk.Now
	regB := prometheus.NewRegistry()
	a := newBroker(t, open(), up, broker.Options{Now: clk.Now})
	b := newBroker(t, open(), up, broker.Options{Now: clk.Now, Registerer: regB})
	tok, err := a.Token(t.Context(), crm)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour + 55*time.Minute) // renewed: same value, generation 2, known to both
	for _, r := range []*broker.Broker{a, b} {
		if _, err := r.Refresh(t.Context(), crm); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	before := up.calls.Load()
	gate := up.hold()
	var wg sync.WaitGroup
	got := make([]string, 2)
	for i, r := range []*broker.Broker{a, b} {
		if i == 1 {
			<-up.entered // A holds the lock and is calling DingTalk
		}
		wg.Go(func() {
			tk, err := r.Invalidate(context.Background(), "crm", tok.Value)
			if err != nil {
				t.Error(err)
			}
			got[i] = tk.Value
		})
	}
	waitFor(t, "B to wait on A's lock", 5*time.Second, func() bool {
		return counterValue(t, regB, "tokend_lock_acquisitions_total", "contended") >= 1
	})
	close(gate)
	wg.Wait()
	if n := up.calls.Load() - before; n != 1 {
		t.Fatalf("concurrent reports on two replicas made %d DingTalk calls, want 1", n)
	}
	for i, v := range got {
		if v != tok.Value {
			t.Errorf("reporter %d did not get the token DingTalk handed back", i)
		}
	}
}
