package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
)

// flowStore is what the flows beyond tokens need of a store (see internal/grant and internal/robot).
type flowStore interface {
	TryLockName(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	UnlockName(ctx context.Context, name, owner string) error
	TakeSlot(ctx context.Context, name string, limit int, window time.Duration, id string) (time.Duration, error)
}

var (
	_ flowStore = (*store.Memory)(nil)
	_ flowStore = (*store.Redis)(nil)
)

// flowHarness is two handles on one store (as two replicas) and, for stores whose clock the test
// controls, a way to move it.
type flowHarness struct {
	A, B    flowStore
	Advance func(time.Duration) // nil: real time
}

func TestFlowsMemory(t *testing.T) {
	runFlowContract(t, func(t *testing.T) flowHarness {
		clock := fakeclock.New(time.Now())
		m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
		return flowHarness{A: m, B: m, Advance: clock.Advance}
	})
}

func TestFlowsMiniredis(t *testing.T) {
	runFlowContract(t, func(t *testing.T) flowHarness {
		a, b, _, advance := miniredisPair(t)
		return flowHarness{A: a, B: b, Advance: advance}
	})
}

func TestFlowsRealRedis(t *testing.T) {
	srv := redistest.Start(t)
	var p prefixes
	runFlowContract(t, func(t *testing.T) flowHarness {
		a, b := redisPair(t, srv.URL(), &p)
		return flowHarness{A: a, B: b}
	})
}

var slotIDs atomic.Int64

func nextID() string { return fmt.Sprintf("id%d", slotIDs.Add(1)) }

func runFlowContract(t *testing.T, open func(*testing.T) flowHarness) {
	t.Run("NamedLockIsExclusiveAcrossHandles", func(t *testing.T) {
		h := open(t)
		ctx := t.Context()
		ok, err := h.A.TryLockName(ctx, "grant:x", "a", time.Minute)
		if err != nil || !ok {
			t.Fatalf("first TryLockName = %v, %v; want true", ok, err)
		}
		if ok, err := h.B.TryLockName(ctx, "grant:x", "b", time.Minute); err != nil || ok {
			t.Fatalf("second TryLockName = %v, %v; want false", ok, err)
		}
		if ok, err := h.B.TryLockName(ctx, "grant:y", "b", time.Minute); err != nil || !ok {
			t.Fatalf("other name = %v, %v; want true", ok, err)
		}
		if err := h.B.UnlockName(ctx, "grant:x", "b"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := h.B.TryLockName(ctx, "grant:x", "b", time.Minute); ok {
			t.Fatal("a non-owner's unlock released the lock")
		}
		if err := h.A.UnlockName(ctx, "grant:x", "a"); err != nil {
			t.Fatal(err)
		}
		if ok, err := h.B.TryLockName(ctx, "grant:x", "b", time.Minute); err != nil || !ok {
			t.Fatalf("after unlock = %v, %v; want true", ok, err)
		}
		if _, err := h.A.TryLockName(ctx, "grant:z", "a", 0); err == nil {
			t.Fatal("ttl 0 accepted")
		}
	})
	t.Run("NamedLockLapses", func(t *testing.T) {
		h := open(t)
		if h.Advance == nil {
			t.Skip("needs a controllable clock (checked on memory and miniredis)")
		}
		ctx := t.Context()
		if ok, _ := h.A.TryLockName(ctx, "l", "a", 2*time.Second); !ok {
			t.Fatal("not taken")
		}
		h.Advance(1999 * time.Millisecond)
		if ok, _ := h.B.TryLockName(ctx, "l", "b", time.Second); ok {
			t.Fatal("taken before the ttl ran out")
		}
		h.Advance(time.Millisecond)
		if ok, _ := h.B.TryLockName(ctx, "l", "b", time.Second); !ok {
			t.Fatal("not taken after the ttl ran out")
		}
	})
	t.Run("SlotsAdmitLimitAcrossHandles", func(t *testing.T) {
		h := open(t)
		ctx := t.Context()
		const limit = 20
		var wg sync.WaitGroup
		var taken, refused atomic.Int64
		for i := range limit + 5 {
			s := h.A
			if i%2 == 1 {
				s = h.B
			}
			wg.Go(func() {
				wait, err := s.TakeSlot(ctx, "robot:r", limit, time.Minute, nextID())
				switch {
				case err != nil:
					t.Error(err)
				case wait == 0:
					taken.Add(1)
				case wait > time.Minute:
					t.Errorf("wait %v longer than the window", wait)
				default:
					refused.Add(1)
				}
			})
		}
		wg.Wait()
		if taken.Load() != limit || refused.Load() != 5 {
			t.Fatalf("taken %d, refused %d; want %d and 5", taken.Load(), refused.Load(), limit)
		}
		if wait, err := h.B.TakeSlot(ctx, "robot:other", limit, time.Minute, nextID()); err != nil || wait != 0 {
			t.Fatalf("another window = %v, %v; want 0", wait, err)
		}
		for _, bad := range []struct {
			limit  int
			window time.Duration
			id     string
		}{{0, time.Minute, "x"}, {1, 0, "x"}, {1, time.Minute, ""}} {
			if _, err := h.A.TakeSlot(ctx, "robot:bad", bad.limit, bad.window, bad.id); err == nil {
				t.Errorf("TakeSlot(%d, %v, %q) accepted", bad.limit, bad.window, bad.id)
			}
		}
	})
	t.Run("SlotsSlide", func(t *testing.T) {
		h := open(t)
		if h.Advance == nil {
			t.Skip("needs a controllable clock (checked on memory and miniredis)")
		}
		ctx := t.Context()
		take := func(s flowStore) time.Duration {
			t.Helper()
			w, err := s.TakeSlot(ctx, "w", 3, time.Minute, nextID())
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
		// Slots at 0 s, 10 s, 20 s fill the window; the fourth waits for the first to leave at 60 s.
		take(h.A)
		h.Advance(10 * time.Second)
		take(h.B)
		h.Advance(10 * time.Second)
		take(h.A)
		h.Advance(10 * time.Second)
		if w := take(h.B); w != 30*time.Second {
			t.Fatalf("wait at 30 s = %v, want 30s", w)
		}
		h.Advance(30*time.Second - time.Millisecond)
		if w := take(h.A); w != time.Millisecond {
			t.Fatalf("wait 1 ms before = %v, want 1ms", w)
		}
		h.Advance(time.Millisecond)
		if w := take(h.A); w != 0 {
			t.Fatalf("at 60 s the first slot left, but wait = %v", w)
		}
		// Now slots at 10, 20, 60: the next frees at 70 s. A refusal took nothing.
		if w := take(h.B); w != 10*time.Second {
			t.Fatalf("wait = %v, want 10s", w)
		}
	})
}
