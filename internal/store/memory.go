package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// RecordRetention is how long a store keeps a record after the token in it expired. It lets a
// replica see a recently expired record (and its generation) while removed apps do not leave data
// behind forever.
const RecordRetention = time.Hour

// SubscriberBuffer is how many announcements Memory queues for one subscriber that has not yet taken
// them. See Memory.Subscribe for what happens when a subscriber falls further behind.
const SubscriberBuffer = 256

// errInvalidTTL is returned by TryLock for a ttl that is not positive.
var errInvalidTTL = errors.New("ttl must be positive")

// errInvalidBudget is returned by Spend for a limit or window that is not positive.
var errInvalidBudget = errors.New("budget limit and window must be positive")

// MemoryOptions configures NewMemory.
type MemoryOptions struct {
	// Now is the clock that lock, note and record lifetimes follow. Nil means time.Now.
	Now func() time.Time
}

// Memory is an in-process store for a single replica. Several brokers in one process may share one
// *Memory to act as replicas (tests do). All methods are safe for concurrent use. Records keep
// millisecond precision and come back in UTC, exactly as Redis gives them back.
type Memory struct {
	now func() time.Time

	mu      sync.Mutex
	records map[token.Key]memRecord
	locks   holds[token.Key]
	notes   map[string]memEntry
	budgets map[budgetKey]budget
	subs    map[*memSub]struct{}
	isv     isvMemory // suite tickets and leases (isv.go)
	flows   memFlows  // named locks and sliding windows (memory_flows.go)
}

// budgetKey names one budget; the window is part of it, as it is of the window number in Redis.
type budgetKey struct {
	name     string
	windowMs int64
}

// budget is the count of one budget's current window. A budget keeps only its latest window, so
// memory grows with the number of names, not with time.
type budget struct {
	window int64 // window number: Unix ms / window ms
	spent  int
}

type memRecord struct {
	rec     token.Record
	dropsAt time.Time // expiry + RecordRetention
}

type memEntry struct {
	value     string
	expiresAt time.Time
}

// memSub is one Subscribe call. Put never blocks on it: when ch is full the event is dropped and lost
// is set, and the subscriber then calls ready so that its owner re-reads the store.
type memSub struct {
	ch   chan memEvent
	lost chan struct{} // capacity 1: a pending "events were dropped" signal
}

type memEvent struct {
	k   token.Key
	rec token.Record
}

// NewMemory returns an empty Memory.
func NewMemory(opts MemoryOptions) *Memory {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Memory{
		now:     now,
		records: make(map[token.Key]memRecord),
		notes:   make(map[string]memEntry),
		budgets: make(map[budgetKey]budget),
		subs:    make(map[*memSub]struct{}),
	}
}

// Get returns the record stored under k; ok is false when there is none. It fails only when ctx is
// already done.
func (m *Memory) Get(ctx context.Context, k token.Key) (token.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return token.Record{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.record(k)
	return r, ok, nil
}

// record returns the live record of k, dropping it if its retention has passed. m.mu must be held.
func (m *Memory) record(k token.Key) (token.Record, bool) {
	r, ok := m.records[k]
	if !ok {
		return token.Record{}, false
	}
	if !m.now().Before(r.dropsAt) {
		delete(m.records, k)
		return token.Record{}, false
	}
	return r.rec, true
}

// Put stores t under k as generation gen+1 if the stored generation is gen (0: nothing stored) and
// t does not move the stored value's expiry backwards. It returns the record stored afterwards and whether t
// was written; a written record is announced to every subscriber. Times are kept to the millisecond.
// The record is kept until RecordRetention after t.ExpiresAt. It fails only when ctx is already done.
//
// The expiry rule: a write of the stored value with an earlier expiry is refused (a late writer
// cannot shorten a renewal), unless it carries an earlier first-seen of the value (the earliest
// first-seen wins, and a jsapi ticket's 24 h cap moves its expiry back with it). A different value
// at the expected generation replaces the stored one whatever the expiries say: the writer read that
// generation before fetching, so its value is the newer one, and the expiries, computed on different
// replicas' clocks, cannot decide it (a replica whose clock runs ahead would otherwise make a fresh
// token, fetched after a revocation, lose to the revoked one).
func (m *Memory) Put(ctx context.Context, k token.Key, gen int64, t token.Token) (token.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return token.Record{}, false, err
	}
	t = normalize(t)
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.record(k)
	if !ok {
		cur = token.Record{}
	}
	if cur.Generation != gen || (ok && t.Value == cur.Value && t.ExpiresAt.Before(cur.ExpiresAt) && !t.FirstSeen.Before(cur.FirstSeen)) {
		return cur, false, nil
	}
	rec := token.Record{Token: t, Generation: gen + 1}
	m.records[k] = memRecord{rec: rec, dropsAt: fromMillis(toMillis(t.ExpiresAt) + RecordRetention.Milliseconds())}
	for s := range m.subs {
		select {
		case s.ch <- memEvent{k: k, rec: rec}:
		default:
			// The subscriber is SubscriberBuffer events behind: drop this one and tell it to re-read.
			select {
			case s.lost <- struct{}{}:
			default:
			}
		}
	}
	return rec, true, nil
}

// TryLock takes the lock of k for owner for ttl if nobody holds it, and reports whether it did. A
// lock is not re-entrant: its holder cannot take it again (holds.go says why). ttl is rounded up to a
// whole millisecond; a ttl <= 0 is an error.
func (m *Memory) TryLock(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error) {
	return tryHold(ctx, m, &m.locks, k, owner, ttl, false)
}

// Unlock releases the lock of k if owner still holds it; otherwise it does nothing.
func (m *Memory) Unlock(ctx context.Context, k token.Key, owner string) error {
	return releaseHold(ctx, m, &m.locks, k, owner)
}

// GetNote returns the note called name and how long it has left to live, by m's clock; ok is false
// when there is none or it expired.
func (m *Memory) GetNote(ctx context.Context, name string) (string, time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.notes[name]
	if !ok {
		return "", 0, false, nil
	}
	now := m.now()
	if !now.Before(n.expiresAt) {
		delete(m.notes, name)
		return "", 0, false, nil
	}
	return n.value, n.expiresAt.Sub(now), true, nil
}

// SetNote stores value as the note called name for ttl (rounded up to a whole millisecond); a ttl
// <= 0 deletes the note.
func (m *Memory) SetNote(ctx context.Context, name, value string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ttl <= 0 {
		delete(m.notes, name)
		return nil
	}
	m.notes[name] = memEntry{value: value, expiresAt: m.now().Add(ceilMillis(ttl))}
	return nil
}

// Spend takes one call from the budget called name, shared by every user of m, which allows limit
// calls per window. It returns 0 when the call may be made now; otherwise how long to wait before
// asking again (at most window), and the call was not taken.
//
// Windows are fixed: window number i runs from i*window to (i+1)*window in Unix time by m's clock.
// window is rounded up to a whole millisecond. A limit or window that is not positive is an error.
func (m *Memory) Spend(ctx context.Context, name string, limit int, window time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkBudget(limit, window); err != nil {
		return 0, err
	}
	w := ceilMillis(window).Milliseconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	// Whole milliseconds, as Redis's TIME is read in the Redis store.
	now := m.now().UnixMilli()
	idx := now / w
	k := budgetKey{name: name, windowMs: w}
	b := m.budgets[k]
	if b.window != idx {
		b = budget{window: idx}
	}
	if b.spent >= limit {
		return time.Duration(max(1, (idx+1)*w-now)) * time.Millisecond, nil
	}
	b.spent++
	m.budgets[k] = b
	return 0, nil
}

// checkBudget validates the arguments of Spend.
func checkBudget(limit int, window time.Duration) error {
	if limit <= 0 || window <= 0 {
		return errInvalidBudget
	}
	return nil
}

// Subscribe calls ready once, then fn for every record written through m (by any caller) until ctx
// ends; then it returns nil. ready and fn are called from the calling goroutine, one at a time, in the
// order of the writes.
//
// Put never waits for a subscriber: each has a queue of SubscriberBuffer announcements. When a
// subscriber falls further behind, the announcements that do not fit are dropped, the queued ones are
// discarded, and ready is called again so that the caller re-reads the store, exactly as after a Redis
// reconnect.
func (m *Memory) Subscribe(ctx context.Context, ready func(), fn func(token.Key, token.Record)) error {
	if err := ctx.Err(); err != nil {
		return nil
	}
	s := &memSub{ch: make(chan memEvent, SubscriberBuffer), lost: make(chan struct{}, 1)}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
	}()

	// Registered before ready, so a write made while the caller re-reads is announced too.
	ready()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.lost:
			s.drain()
			ready()
		case ev := <-s.ch:
			select {
			case <-s.lost:
				// Checked first so that, once behind, stale queued events are skipped, not delivered.
				s.drain()
				ready()
			default:
				fn(ev.k, ev.rec)
			}
		}
	}
}

// drain discards the queued events.
func (s *memSub) drain() {
	for {
		select {
		case <-s.ch:
		default:
			return
		}
	}
}

// Ping reports whether the store answers: always, unless ctx is done.
func (m *Memory) Ping(ctx context.Context) error {
	return ctx.Err()
}

// ceilMillis rounds d up to a whole millisecond, the precision Redis keeps TTLs in.
func ceilMillis(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}
