package store

import (
	"context"
	"time"
)

// memFlows is Memory's state for the operations of flows.go. Its zero value is ready; it is guarded
// by Memory.mu.
type memFlows struct {
	locks   holds[string]
	windows map[string][]time.Time // slot times, oldest first
}

// TryLockName takes the lock called name for owner for ttl if nobody holds it, and reports whether
// it did. Like TryLock's, the lock is not re-entrant. ttl is rounded up to a whole millisecond; a
// ttl <= 0 is an error.
func (m *Memory) TryLockName(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	return tryHold(ctx, m, &m.flows.locks, name, owner, ttl, false)
}

// UnlockName releases the lock called name if owner still holds it; otherwise it does nothing.
func (m *Memory) UnlockName(ctx context.Context, name, owner string) error {
	return releaseHold(ctx, m, &m.flows.locks, name, owner)
}

// TakeSlot takes one slot in the sliding window called name, which admits limit slots in any period
// of window by m's clock. It returns 0 when the slot was taken; otherwise how long until the oldest
// slot leaves the window, and nothing was taken. id only has to be non-empty (Redis needs it to tell
// slots apart). A limit or window that is not positive is an error.
func (m *Memory) TakeSlot(ctx context.Context, name string, limit int, window time.Duration, id string) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkBudget(limit, window); err != nil {
		return 0, err
	}
	if id == "" {
		return 0, errEmptyID
	}
	w := ceilMillis(window)
	m.mu.Lock()
	defer m.mu.Unlock()
	// Whole milliseconds, as Redis's TIME is read in the Redis store.
	now := time.UnixMilli(m.now().UnixMilli())
	slots := m.flows.windows[name]
	keep := 0
	for keep < len(slots) && !slots[keep].After(now.Add(-w)) {
		keep++
	}
	slots = slots[keep:]
	if len(slots) >= limit {
		m.flows.windows[name] = slots
		return max(time.Millisecond, slots[0].Add(w).Sub(now)), nil
	}
	if m.flows.windows == nil {
		m.flows.windows = make(map[string][]time.Time)
	}
	m.flows.windows[name] = append(slots, now)
	return 0, nil
}
