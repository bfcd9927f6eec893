// The shared rate budgets: Spend.

package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// spend calls s.Spend and fails the test on an error.
func spend(t *testing.T, s Store, name string, limit int, window time.Duration) time.Duration {
	t.Helper()
	wait, err := s.Spend(t.Context(), name, limit, window)
	if err != nil {
		t.Fatalf("Spend(%q, %d, %v): %v", name, limit, window, err)
	}
	return wait
}

// mustRefuse checks that a Spend answer is a refusal with a wait no longer than the window.
func mustRefuse(t *testing.T, what string, wait, window time.Duration) {
	t.Helper()
	if wait <= 0 || wait > window {
		t.Fatalf("%s: wait %v, want a refusal with 0 < wait <= %v", what, wait, window)
	}
}

func testSpendShared(t *testing.T, h Harness) {
	// A window long enough that a wall-clock backend does not cross a window boundary in the test.
	const (
		name   = "dingtalk:gettoken"
		limit  = 3
		window = time.Hour
	)
	handles := []Store{h.A, h.B}
	for i := range limit {
		if wait := spend(t, handles[i%2], name, limit, window); wait != 0 {
			t.Fatalf("call %d of %d in a fresh window: wait %v, want 0", i+1, limit, wait)
		}
	}
	// The budget is shared: both handles are now refused, however often they ask.
	for i := range 4 {
		mustRefuse(t, fmt.Sprintf("call %d past the limit", limit+i+1), spend(t, handles[i%2], name, limit, window), window)
	}
	// Other budgets are untouched, even one whose name extends this one's.
	for _, other := range []string{"dingtalk:getjsapiticket", name + ":1", "br{ace}"} {
		if wait := spend(t, h.B, other, 1, window); wait != 0 {
			t.Fatalf("first call of budget %q after %q was spent: wait %v, want 0", other, name, wait)
		}
	}
	// The same name with a larger limit has room left: refused calls were not counted.
	if wait := spend(t, h.A, name, limit+1, window); wait != 0 {
		t.Fatalf("call with limit %d after %d taken: wait %v, want 0", limit+1, limit, wait)
	}
	mustRefuse(t, "call past the larger limit", spend(t, h.B, name, limit+1, window), window)
}

func testSpendWindow(t *testing.T, h Harness) {
	// Short, so that a wall-clock backend reaches the next window within the test.
	const (
		name   = "window"
		limit  = 2
		window = 200 * time.Millisecond
	)
	var wait time.Duration
	taken := 0
	for {
		s := h.A
		if taken%2 == 1 {
			s = h.B
		}
		if wait = spend(t, s, name, limit, window); wait != 0 {
			break
		}
		taken++
		// With the wall clock the calls may straddle a window boundary, and the next window allows
		// limit more; a frozen clock must refuse exactly after limit.
		if (h.Advance != nil && taken > limit) || taken > 2*limit {
			t.Fatalf("%d calls taken with limit %d in a %v window", taken, limit, window)
		}
	}
	if taken < limit {
		t.Fatalf("refused after %d calls, want %d", taken, limit)
	}
	mustRefuse(t, "call past the limit", wait, window)
	if h.Advance != nil {
		// The wait is exact: a millisecond before the window ends the budget is still spent.
		h.Advance(wait - time.Millisecond)
		if w := spend(t, h.B, name, limit, window); w != time.Millisecond {
			t.Fatalf("a millisecond before the window ends: wait %v, want 1ms", w)
		}
		wait = time.Millisecond
	}
	h.elapse(t, wait, "budget renewed in the next window", func() bool {
		return spend(t, h.B, name, limit, window) == 0
	})
	if h.Advance != nil {
		// The new window holds limit calls again, the one just taken included.
		for i := 1; i < limit; i++ {
			if w := spend(t, h.A, name, limit, window); w != 0 {
				t.Fatalf("call %d in the new window: wait %v, want 0", i+1, w)
			}
		}
		mustRefuse(t, "call past the limit in the new window", spend(t, h.A, name, limit, window), window)
	}
}

func testSpendConcurrent(t *testing.T, h Harness) {
	const (
		n      = 50
		limit  = 10
		window = time.Hour
	)
	waits := make([]time.Duration, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		s := h.A
		if i%2 == 1 {
			s = h.B
		}
		wg.Go(func() {
			<-start
			waits[i], errs[i] = s.Spend(t.Context(), "concurrent", limit, window)
		})
	}
	close(start)
	wg.Wait()
	allowed := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Spend %d: %v", i, errs[i])
		}
		if waits[i] == 0 {
			allowed++
			continue
		}
		mustRefuse(t, fmt.Sprintf("Spend %d", i), waits[i], window)
	}
	if allowed != limit {
		t.Fatalf("%d concurrent Spends on a budget of %d allowed %d, want exactly %d", n, limit, allowed, limit)
	}
}

func testSpendInvalid(t *testing.T, h Harness) {
	for _, tc := range []struct {
		limit  int
		window time.Duration
	}{
		{0, time.Second},
		{-1, time.Second},
		{1, 0},
		{1, -time.Second},
	} {
		if wait, err := h.A.Spend(t.Context(), "invalid", tc.limit, tc.window); err == nil {
			t.Errorf("Spend with limit %d, window %v = %v, nil; want an error", tc.limit, tc.window, wait)
		}
	}
	// A window that is not a whole number of milliseconds is rounded up, not refused.
	if wait := spend(t, h.A, "sub-millisecond", 1, time.Microsecond); wait != 0 {
		t.Fatalf("Spend with a 1µs window: wait %v, want 0", wait)
	}
}
