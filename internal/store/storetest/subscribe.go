// Announcements: Subscribe.

package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/token"
)

type event struct {
	k   token.Key
	rec token.Record
}

// subscription runs s.Subscribe in the background until the test ends.
type subscription struct {
	ready  chan struct{}
	events chan event
	done   chan error
	cancel context.CancelFunc
}

func subscribe(t *testing.T, s Store) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub := &subscription{
		ready:  make(chan struct{}, 16),
		events: make(chan event, 64),
		done:   make(chan error, 1),
		cancel: cancel,
	}
	go func() {
		sub.done <- s.Subscribe(ctx,
			func() {
				select {
				case sub.ready <- struct{}{}:
				default:
				}
			},
			func(k token.Key, rec token.Record) { sub.events <- event{k, rec} },
		)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-sub.done:
		case <-time.After(10 * time.Second):
			t.Error("Subscribe did not return after its context was canceled")
		}
	})
	select {
	case <-sub.ready:
	case err := <-sub.done:
		t.Fatalf("Subscribe returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not call ready")
	}
	return sub
}

func (sub *subscription) next(t *testing.T) event {
	t.Helper()
	select {
	case ev := <-sub.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no announcement within 10s")
		return event{}
	}
}

func testSubscribe(t *testing.T, h Harness) {
	subA := subscribe(t, h.A)
	subB := subscribe(t, h.B)

	r1 := mustPut(t, h.B, crm, 0, tok(h, "from-b", time.Hour))
	for name, sub := range map[string]*subscription{"A": subA, "B (the writer)": subB} {
		ev := sub.next(t)
		if ev.k != crm || !sameRecord(ev.rec, r1) {
			t.Fatalf("subscriber %s got %s %s, want %s %s", name, ev.k, show(ev.rec), crm, show(r1))
		}
	}

	// A refused Put announces nothing; the next write is the next announcement.
	if _, written, err := h.A.Put(t.Context(), crm, 0, tok(h, "stale", 2*time.Hour)); err != nil || written {
		t.Fatalf("stale Put = %v, %v", written, err)
	}
	ticket := token.Key{App: "crm", Kind: token.JSAPITicket}
	r2 := mustPut(t, h.A, ticket, 0, tok(h, "ticket", 2*time.Hour))
	r3 := mustPut(t, h.A, crm, 1, tok(h, "from-a", 2*time.Hour))
	for name, sub := range map[string]*subscription{"A": subA, "B": subB} {
		for _, want := range []event{{ticket, r2}, {crm, r3}} {
			ev := sub.next(t)
			if ev.k != want.k || !sameRecord(ev.rec, want.rec) {
				t.Fatalf("subscriber %s got %s %s, want %s %s", name, ev.k, show(ev.rec), want.k, show(want.rec))
			}
		}
	}
}

func testSubscribeOddBytes(t *testing.T, h Harness) {
	sub := subscribe(t, h.A)
	for i, v := range oddValues() {
		k := token.Key{App: oddApp(i), Kind: token.Kind("kind:" + oddApp(i+1))}
		r := mustPut(t, h.B, k, 0, tok(h, v, time.Hour))
		ev := sub.next(t)
		if ev.k != k || !sameRecord(ev.rec, r) {
			t.Fatalf("odd value %d: got %q %s, want %q %s", i, ev.k, show(ev.rec), k, show(r))
		}
	}
}

func testSubscribeStops(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- h.A.Subscribe(ctx, func() {
			select {
			case ready <- struct{}{}:
			default:
			}
		}, func(token.Key, token.Record) {})
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not call ready")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Subscribe returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return within 5s of its context ending")
	}
	// An already-ended context returns at once.
	if err := h.B.Subscribe(ctx, func() {}, func(token.Key, token.Record) {}); err != nil {
		t.Fatalf("Subscribe on an ended context = %v, want nil", err)
	}
}
