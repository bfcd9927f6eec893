package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
)

// aheadBy is a clock running d ahead of the real one.
func aheadBy(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }

// TestSkewedReplicaNotesDoNotStallOthers: a replica whose clock runs an hour ahead notes a busy
// answer and a ban. The notes carry durations (the store's TTL), so a replica with a correct clock
// waits the back-off and the ban as long as they last, not an hour more.
func TestSkewedReplicaNotesDoNotStallOthers(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) broker.Store{
		"memory": func(*testing.T) broker.Store { return store.NewMemory(store.MemoryOptions{}) },
		"redis":  func(t *testing.T) broker.Store { return redisHandles(t, 1)[0] },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			up := newUpstream(2 * time.Hour)
			ahead := newBroker(t, st, up, broker.Options{Now: aheadBy(time.Hour)})
			right := newBroker(t, st, up, broker.Options{})
			up.fail(&dingtalk.Error{Family: dingtalk.FamilyNew, Status: 503, Code: "systemBusy", Class: dingtalk.ClassUnavailable})
			if _, err := ahead.Token(t.Context(), crm); err == nil {
				t.Fatal("want a failure")
			}
			_, err := right.Token(t.Context(), crm)
			var ue *broker.UnavailableError
			if !errors.As(err, &ue) || ue.RetryAfter <= 0 || ue.RetryAfter > 10*time.Second {
				t.Fatalf("after the skewed replica's busy answer: %v, want UnavailableError with 0 < RetryAfter <= 10s (the back-off)", err)
			}
			up.fail(&dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 403, Code: "ip_ban", Class: dingtalk.ClassBanned})
			other := broker.App{Name: "hr", Cred: dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "hr", Secret: "s"}}
			ahead.Reload(t.Context(), append(apps("crm"), other))
			right.Reload(t.Context(), append(apps("crm"), other))
			hr := crm
			hr.App = "hr"
			if _, err := ahead.Token(t.Context(), hr); err == nil {
				t.Fatal("want a ban")
			}
			_, err = right.Token(t.Context(), hr)
			if !errors.As(err, &ue) || ue.RetryAfter <= 4*time.Minute || ue.RetryAfter > 5*time.Minute {
				t.Fatalf("after the skewed replica's ban: %v, want UnavailableError with RetryAfter about 5 min", err)
			}
		})
	}
}

// TestSkewedReplicaTokenReplacedAfterRevocation: the current token was fetched by a replica whose
// clock runs an hour ahead, so its recorded expiry is an hour late. DingTalk revokes it; a replica
// with a correct clock replaces it, and its fresh token is stored and served (its earlier expiry
// does not lose to the revoked token's), here and on the skewed replica.
func TestSkewedReplicaTokenReplacedAfterRevocation(t *testing.T) {
	st := store.NewMemory(store.MemoryOptions{})
	up := newUpstream(2 * time.Hour)
	ahead := newBroker(t, st, up, broker.Options{Now: aheadBy(time.Hour)})
	right := newBroker(t, st, up, broker.Options{})
	old, err := ahead.Token(t.Context(), crm)
	if err != nil {
		t.Fatal(err)
	}
	up.revoke("crm")
	fresh, err := right.Invalidate(t.Context(), "crm", old.Value)
	if err != nil || fresh.Value == old.Value {
		t.Fatalf("report of the revoked token: %v (replaced: %t), want a new token", err, fresh.Value != old.Value)
	}
	rec, ok, err := st.Get(t.Context(), crm)
	if err != nil || !ok || rec.Value != fresh.Value {
		t.Fatalf("the store holds the new token: %t (ok=%v err=%v), want it to", rec.Value == fresh.Value, ok, err)
	}
	if got, err := right.Token(t.Context(), crm); err != nil || got.Value != fresh.Value {
		t.Fatalf("the reporting replica serves the new token: %t (%v)", got.Value == fresh.Value, err)
	}
	if got, err := ahead.Invalidate(t.Context(), "crm", old.Value); err != nil || got.Value != fresh.Value {
		t.Fatalf("the skewed replica, told of the revoked token, serves the new one: %t (%v)", got.Value == fresh.Value, err)
	}
}
