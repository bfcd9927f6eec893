package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/store"
)

// TestEgressBudgetSharedByReplicas: the egress budget (proxy.max_rps) is one budget for all replicas
// together, through the store; a call over it is refused at once with RateLimitedError, never waits.
func TestEgressBudgetSharedByReplicas(t *testing.T) {
	const limit = 5
	for name, open := range map[string]func(t *testing.T) broker.Store{
		// A clock that stands still: the whole test is inside one budget window.
		"memory": func(*testing.T) broker.Store {
			at := time.Now()
			return store.NewMemory(store.MemoryOptions{Now: func() time.Time { return at }})
		},
		"redis": func(t *testing.T) broker.Store { return redisHandles(t, 1)[0] },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			a := newBroker(t, st, newUpstream(2*time.Hour), broker.Options{EgressRPS: limit})
			b := newBroker(t, st, newUpstream(2*time.Hour), broker.Options{EgressRPS: limit})
			taken, refused := 0, 0
			for i := range 3 * limit {
				err := []*broker.Broker{a, b}[i%2].Egress(t.Context())
				var rl *broker.RateLimitedError
				switch {
				case err == nil:
					taken++
				case errors.As(err, &rl) && rl.RetryAfter > 0 && rl.RetryAfter <= time.Second:
					refused++
				default:
					t.Fatalf("Egress: %v, want nil or RateLimitedError with 0 < RetryAfter <= 1s", err)
				}
			}
			// A real Redis's window may turn once during the loop: at most two windows' worth.
			if refused == 0 || taken < limit || taken > 2*limit {
				t.Fatalf("%d calls taken, %d refused out of %d on two replicas with a shared budget of %d/s", taken, refused, 3*limit, limit)
			}
		})
	}
}

// TestEgressLocalBucketWhileStoreDown: without the store, each replica keeps to the budget alone.
func TestEgressLocalBucketWhileStoreDown(t *testing.T) {
	st := &flakyStore{Memory: store.NewMemory(store.MemoryOptions{})}
	st.down.Store(true)
	b := newBroker(t, st, newUpstream(2*time.Hour), broker.Options{EgressRPS: 3})
	for i := range 3 {
		if err := b.Egress(t.Context()); err != nil {
			t.Fatalf("call %d within the budget: %v", i, err)
		}
	}
	err := b.Egress(t.Context())
	var rl *broker.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 || rl.RetryAfter > time.Second {
		t.Fatalf("call over the budget with the store down: %v, want RateLimitedError", err)
	}
}

// TestReportBanPausesEgressAndRefreshesOnEveryReplica: a ban met on a proxied call pauses every
// Part 2 call and every token refresh on every replica for five minutes, as a ban on a token call does.
func TestReportBanPausesEgressAndRefreshesOnEveryReplica(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) broker.Store{
		"memory": func(*testing.T) broker.Store { return store.NewMemory(store.MemoryOptions{}) },
		"redis":  func(t *testing.T) broker.Store { return redisHandles(t, 1)[0] },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			up := newUpstream(2 * time.Hour)
			a := newBroker(t, st, up, broker.Options{})
			b := newBroker(t, st, up, broker.Options{})
			a.ReportBan(t.Context())
			for name, r := range map[string]*broker.Broker{"reporter": a, "other": b} {
				err := r.Egress(t.Context())
				var ue *broker.UnavailableError
				if !errors.As(err, &ue) || ue.Code != "ip_ban" || ue.RetryAfter <= 4*time.Minute || ue.RetryAfter > 5*time.Minute {
					t.Fatalf("%s replica's Egress during the ban: %v, want UnavailableError ip_ban with RetryAfter about 5 min", name, err)
				}
			}
			_, err := b.Token(t.Context(), crm)
			var ue *broker.UnavailableError
			if !errors.As(err, &ue) || ue.Code != "ip_ban" {
				t.Fatalf("a refresh during the ban: %v, want UnavailableError ip_ban", err)
			}
			if n := up.calls.Load(); n != 0 {
				t.Fatalf("%d DingTalk calls during the ban, want 0", n)
			}
		})
	}
}
