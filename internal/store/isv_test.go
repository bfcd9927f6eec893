package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/store/storetest"
)

// isvStore is the third-party part of a store: suite tickets and leases.
type isvStore interface {
	GetSuiteTicket(ctx context.Context, app string) (store.SuiteTicket, bool, error)
	PutSuiteTicket(ctx context.Context, app string, t store.SuiteTicket) (store.SuiteTicket, bool, error)
	TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, owner string) error
}

var (
	_ isvStore = (*store.Memory)(nil)
	_ isvStore = (*store.Redis)(nil)
)

// isvHarness is one fresh backend with two handles (two replicas) and, where it can, a clock.
type isvHarness struct {
	a, b isvStore
	// advance moves the backend's clock; nil means the wall clock (real Redis).
	advance func(time.Duration)
}

func TestMemoryISVContract(t *testing.T) {
	runISVContract(t, func(t *testing.T) isvHarness {
		clock := fakeclock.New(time.Now())
		m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
		return isvHarness{a: m, b: m, advance: clock.Advance}
	})
}

func TestMiniredisISVContract(t *testing.T) {
	runISVContract(t, func(t *testing.T) isvHarness {
		a, b, _, advance := miniredisPair(t)
		return isvHarness{a: a, b: b, advance: advance}
	})
}

func TestRedisISVContract(t *testing.T) {
	srv := redistest.Start(t)
	var p prefixes
	runISVContract(t, func(t *testing.T) isvHarness {
		a, b := redisPair(t, srv.URL(), &p)
		return isvHarness{a: a, b: b}
	})
}

func runISVContract(t *testing.T, newStore func(t *testing.T) isvHarness) {
	base := time.UnixMilli(1_763_800_000_000).UTC()
	ticket := func(v string, ms int64) store.SuiteTicket {
		return store.SuiteTicket{Value: v, PushedAt: base.Add(time.Duration(ms) * time.Millisecond)}
	}

	t.Run("ticket absent", func(t *testing.T) {
		h := newStore(t)
		if got, ok, err := h.a.GetSuiteTicket(t.Context(), "saas"); err != nil || ok || got != (store.SuiteTicket{}) {
			t.Fatalf("GetSuiteTicket on an empty store = %v, %v, %v", got.PushedAt, ok, err)
		}
	})

	t.Run("newest push wins, older never replaces", func(t *testing.T) {
		h := newStore(t)
		ctx := t.Context()
		steps := []struct {
			put         store.SuiteTicket
			wantWritten bool
			wantValue   string
		}{
			{ticket("t1", 0), true, "t1"},
			{ticket("t3", 2000), true, "t3"},
			{ticket("t2", 1000), false, "t3"},  // older push, arriving late
			{ticket("t3", 2000), false, "t3"},  // DingTalk repeats a push: idempotent
			{ticket("t3b", 2000), false, "t3"}, // same push time: the first stored stays
			{ticket("t4", 2001), true, "t4"},
		}
		for i, s := range steps {
			s1, s2 := h.a, h.b
			if i%2 == 1 {
				s1, s2 = h.b, h.a
			}
			cur, written, err := s1.PutSuiteTicket(ctx, "saas", s.put)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if written != s.wantWritten || cur.Value != s.wantValue {
				t.Fatalf("step %d: put %s@%d → written %v, current %s; want %v, %s", i, s.put.Value,
					s.put.PushedAt.Sub(base).Milliseconds(), written, cur.Value, s.wantWritten, s.wantValue)
			}
			got, ok, err := s2.GetSuiteTicket(ctx, "saas")
			if err != nil || !ok || got != cur {
				t.Fatalf("step %d: the other replica reads %v@%v, %v, %v; want %v", i, got.Value, got.PushedAt, ok, err, cur)
			}
		}
	})

	t.Run("tickets of two suites are apart", func(t *testing.T) {
		h := newStore(t)
		ctx := t.Context()
		mustPutTicket(t, h.a, "one", ticket("t-one", 5000))
		mustPutTicket(t, h.a, "two", ticket("t-two", 1))
		for app, want := range map[string]string{"one": "t-one", "two": "t-two"} {
			got, ok, err := h.b.GetSuiteTicket(ctx, app)
			if err != nil || !ok || got.Value != want {
				t.Fatalf("suite %s: %q, %v, %v; want %q", app, got.Value, ok, err, want)
			}
		}
	})

	t.Run("millisecond precision in UTC", func(t *testing.T) {
		h := newStore(t)
		in := store.SuiteTicket{Value: "v", PushedAt: base.Add(1234567 * time.Nanosecond).In(time.FixedZone("CST", 8*3600))}
		cur := mustPutTicket(t, h.a, "saas", in)
		want := base.Add(time.Millisecond)
		if !cur.PushedAt.Equal(want) || cur.PushedAt.Location() != time.UTC {
			t.Fatalf("PushedAt = %v, want %v in UTC", cur.PushedAt, want)
		}
		got, _, _ := h.b.GetSuiteTicket(t.Context(), "saas")
		if got != cur {
			t.Fatalf("read back %v, want %v", got.PushedAt, cur.PushedAt)
		}
	})

	t.Run("rejects empty tickets without quoting them", func(t *testing.T) {
		h := newStore(t)
		for _, tk := range []store.SuiteTicket{{Value: "", PushedAt: base}, {Value: "secret-ticket"}} {
			_, written, err := h.a.PutSuiteTicket(t.Context(), "saas", tk)
			if err == nil || written {
				t.Fatalf("PutSuiteTicket(%v) = %v, %v; want an error", tk.PushedAt, written, err)
			}
			if strings.Contains(err.Error(), "secret-ticket") {
				t.Fatalf("error %q quotes the ticket", err)
			}
		}
	})

	t.Run("concurrent pushes: the newest is stored", func(t *testing.T) {
		h := newStore(t)
		ctx := t.Context()
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := h.a
				if i%2 == 1 {
					s = h.b
				}
				if _, _, err := s.PutSuiteTicket(ctx, "saas", ticket(fmt.Sprintf("t%02d", i), int64(i))); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got, _, err := h.a.GetSuiteTicket(ctx, "saas")
		if err != nil || got.Value != "t39" {
			t.Fatalf("after concurrent pushes the store holds %q, %v; want t39", got.Value, err)
		}
	})

	t.Run("lease: one holder, renewal, release", func(t *testing.T) {
		h := newStore(t)
		ctx := t.Context()
		mustLease(t, h.a, "stream:saas", "r1", time.Minute, true)
		mustLease(t, h.b, "stream:saas", "r2", time.Minute, false)
		mustLease(t, h.a, "stream:saas", "r1", time.Minute, true) // renewal by its holder
		mustLease(t, h.b, "stream:other", "r2", time.Minute, true)
		// Release by a non-holder does nothing.
		if err := h.b.ReleaseLease(ctx, "stream:saas", "r2"); err != nil {
			t.Fatal(err)
		}
		mustLease(t, h.b, "stream:saas", "r2", time.Minute, false)
		if err := h.a.ReleaseLease(ctx, "stream:saas", "r1"); err != nil {
			t.Fatal(err)
		}
		mustLease(t, h.b, "stream:saas", "r2", time.Minute, true)
		mustLease(t, h.a, "stream:saas", "r1", time.Minute, false)
	})

	t.Run("lease lapses when not renewed; renewal extends it", func(t *testing.T) {
		h := newStore(t)
		ttl := 300 * time.Millisecond
		if h.advance != nil {
			ttl = 10 * time.Second
		}
		mustLease(t, h.a, "stream:saas", "r1", ttl, true)
		if h.advance != nil {
			// Renewed just before it lapses, it outlives the first ttl.
			h.advance(ttl - time.Millisecond)
			mustLease(t, h.a, "stream:saas", "r1", ttl, true)
			h.advance(ttl / 2)
			mustLease(t, h.b, "stream:saas", "r2", ttl, false)
		}
		storetest.Elapse(t, h.advance, ttl, "the lease lapsed and another replica took it", func() bool {
			held, err := h.b.TryLease(t.Context(), "stream:saas", "r2", time.Minute)
			return err == nil && held
		})
		mustLease(t, h.a, "stream:saas", "r1", ttl, false)
	})

	t.Run("lease rejects a non-positive ttl", func(t *testing.T) {
		h := newStore(t)
		if held, err := h.a.TryLease(t.Context(), "x", "r1", 0); err == nil || held {
			t.Fatalf("TryLease(ttl 0) = %v, %v", held, err)
		}
	})
}

func mustPutTicket(t *testing.T, s isvStore, app string, tk store.SuiteTicket) store.SuiteTicket {
	t.Helper()
	cur, written, err := s.PutSuiteTicket(t.Context(), app, tk)
	if err != nil || !written {
		t.Fatalf("PutSuiteTicket(%s) = %v, %v", app, written, err)
	}
	return cur
}

func mustLease(t *testing.T, s isvStore, name, owner string, ttl time.Duration, want bool) {
	t.Helper()
	held, err := s.TryLease(t.Context(), name, owner, ttl)
	if err != nil || held != want {
		t.Fatalf("TryLease(%s, %s) = %v, %v; want %v", name, owner, held, err, want)
	}
}
