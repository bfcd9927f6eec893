package broker_test

import (
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
)

// TestTicketEarliestFirstSeenWinsAfterStoreLoss: Redis restarts empty, and a replica that starts
// afterwards fetches the ticket another replica has served for an hour, recording itself as its first
// sight. The earliest first-seen wins everywhere: the replica that saw it first keeps it when it
// reads the other's record, writes it back to the store, the other replica learns it, and nobody
// serves the ticket past first-seen + 24 h.
func TestTicketEarliestFirstSeenWinsAfterStoreLoss(t *testing.T) {
	srv := redistest.Start(t)
	open := func() broker.Store {
		s, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "firstseen", OpTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	clk := newClock()
	clk.ns.Store(time.Now().Truncate(time.Second).UnixNano()) // Redis drops records by its own clock
	up := &ticketUpstream{now: clk.Now}
	ticketApps := apps("crm")
	ticketApps[0].JSAPITicket = true
	st := open()
	a := newBroker(t, st, up, broker.Options{Now: clk.Now, Apps: ticketApps})
	first, err := a.Token(t.Context(), crmTicket)
	if err != nil {
		t.Fatal(err)
	}
	t0 := first.FirstSeen
	if _, err := srv.Do("FLUSHALL"); err != nil { // Redis restarted with nothing persisted
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	b := newBroker(t, open(), up, broker.Options{Now: clk.Now, Apps: ticketApps}) // a replica (re)starts
	late, err := b.Token(t.Context(), crmTicket)
	if err != nil {
		t.Fatal(err)
	}
	if late.Value != first.Value || !late.FirstSeen.After(t0) {
		t.Fatalf("scenario: the restarted replica should fetch the same ticket and see it later")
	}
	clk.Add(2*time.Hour - 5*time.Minute) // A's value enters its refresh window: A reads B's record
	if _, err := a.Token(t.Context(), crmTicket); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := st.Get(t.Context(), crmTicket)
	if err != nil || !ok {
		t.Fatalf("store: ok=%v err=%v", ok, err)
	}
	if !rec.FirstSeen.Equal(t0) {
		t.Errorf("the store's first-seen is t0%+v, want t0 (the earliest, written back)", rec.FirstSeen.Sub(t0))
	}
	if limit := t0.Add(24 * time.Hour); rec.ExpiresAt.After(limit) {
		t.Errorf("the store's expiry is t0+%v, past the 24 h cap", rec.ExpiresAt.Sub(t0))
	}
	for clk.Now().Before(t0.Add(24*time.Hour + 30*time.Minute)) {
		for name, r := range map[string]*broker.Broker{"first": a, "restarted": b} {
			got, err := r.Token(t.Context(), crmTicket)
			if err != nil {
				t.Fatal(err)
			}
			if got.Value == first.Value && got.ExpiresAt.After(t0.Add(24*time.Hour)) {
				t.Fatalf("%s replica serves the ticket until t0+%v, past first-seen + 24 h", name, got.ExpiresAt.Sub(t0))
			}
		}
		clk.Add(10 * time.Minute)
	}
}
