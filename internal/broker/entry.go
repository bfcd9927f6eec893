package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// State is what an entry is doing, as /readyz shows it.
type State string

// The states of a credential.
const (
	StateOK         State = "ok"
	StateRefreshing State = "refreshing"
	StateFailing    State = "failing"
)

// entry is one credential of one app.
type entry struct {
	key token.Key

	// cur is the value served; read without locks on the hot path.
	cur atomic.Pointer[token.Record]

	mu           sync.Mutex
	app          App
	state        State
	lastErr      *fault        // last upstream failure, nil after a success
	nextTry      time.Time     // no upstream call before this (back-off or slow retry)
	attempts     int           // consecutive retryable failures
	dirty        bool          // cur was fetched while the store was down and must be written back
	checked      string        // fingerprint of the value last checked after a report, unchanged
	checkedUntil time.Time     // reports of that value before this get 429
	noted        bool          // a back-off note for this key may exist in the store
	changed      chan struct{} // closed and replaced whenever cur changes

	// Owned by the scheduler, guarded by its mutex.
	heapIndex int       // position in the scheduler's heap, -1 when not queued
	due       time.Time // when the scheduler refreshes it next
}

func newEntry(k token.Key, a App) *entry {
	return &entry{key: k, app: a, state: StateRefreshing, changed: make(chan struct{}), heapIndex: -1}
}

func (e *entry) setApp(a App) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.app = a
}

func (e *entry) appConfig() App {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.app
}

// adopt makes rec the served value if it is newer than the current one, and reports whether the
// served value changed. Of two records of the same value, the earliest first-seen wins (and, for a
// jsapi ticket, the 24 h cap that follows from it), whichever record it came in, so a replica that
// saw a ticket first never forgets it. A record of another value is newer when it expires later, or
// when it is a later write (higher generation) of a valid value: expiries computed on two replicas'
// clocks cannot order a revocation's replacement.
func (e *entry) adopt(rec token.Record, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.adoptLocked(rec, now)
}

func (e *entry) adoptLocked(rec token.Record, now time.Time) bool {
	if rec.Value == "" {
		return false
	}
	old := e.cur.Load()
	if old != nil {
		if old.Value == rec.Value {
			rec = e.merge(*old, rec)
			if rec == *old {
				return false
			}
		} else if !rec.ExpiresAt.After(old.ExpiresAt) && (rec.Generation <= old.Generation || !rec.Valid(now)) {
			return false
		}
	}
	r := rec
	e.cur.Store(&r)
	close(e.changed)
	e.changed = make(chan struct{})
	return true
}

// merge combines two records of the same value: the later expiry, fetch and generation, the
// earliest first-seen, and for a ticket the cap at its first-seen + 24 h.
func (e *entry) merge(a, b token.Record) token.Record {
	m := b
	if a.ExpiresAt.After(m.ExpiresAt) {
		m.ExpiresAt = a.ExpiresAt
	}
	if a.FetchedAt.After(m.FetchedAt) {
		m.FetchedAt = a.FetchedAt
	}
	m.Generation = max(a.Generation, b.Generation)
	if !a.FirstSeen.IsZero() && (m.FirstSeen.IsZero() || a.FirstSeen.Before(m.FirstSeen)) {
		m.FirstSeen = a.FirstSeen
	}
	if e.key.Kind == token.JSAPITicket && !m.FirstSeen.IsZero() {
		if limit := m.FirstSeen.Add(ticketMaxAge); m.ExpiresAt.After(limit) {
			m.ExpiresAt = limit
		}
	}
	return m
}

// markChecked records that value was checked with DingTalk after a report and came back unchanged;
// reports of it get 429 until until.
func (e *entry) markChecked(value string, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checked, e.checkedUntil = token.Fingerprint(value), until
}

// checkedLeft is what is left at now of value's cool-down, as this replica knows it.
func (e *entry) checkedLeft(value string, now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.checked != token.Fingerprint(value) || !now.Before(e.checkedUntil) {
		return 0
	}
	return e.checkedUntil.Sub(now)
}

// served returns the value served, the zero Token when there is none.
func (e *entry) served() token.Token {
	if r := e.cur.Load(); r != nil {
		return r.Token
	}
	return token.Token{}
}

// changes returns a channel closed at the next change of cur.
func (e *entry) changes() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// blocked returns the error a caller without a valid token gets at once, without any upstream call,
// while the entry is waiting out a failure; nil when a refresh may be tried.
func (e *entry) blocked(now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lastErr == nil || !now.Before(e.nextTry) {
		return nil
	}
	return e.lastErr.err(e.nextTry.Sub(now))
}

// Status is one credential's state as /readyz shows it.
type Status struct {
	State State
	// ExpiresAt is the served value's expiry; zero when there is none.
	ExpiresAt time.Time
	// UpstreamCode is DingTalk's code of the last failure; "" after a success.
	UpstreamCode string
}

func (e *entry) status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{State: e.state}
	if r := e.cur.Load(); r != nil {
		s.ExpiresAt = r.ExpiresAt
	}
	if e.lastErr != nil {
		s.UpstreamCode = e.lastErr.Code
	}
	return s
}

// fetching marks the entry refreshing as its fetch begins, unless it is failing (a failing entry
// stays failing until a success).
func (e *entry) fetching() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lastErr == nil {
		e.state = StateRefreshing
	}
}

// fail records a failed fetch at now: when to try again (policy: retryAfter) and the note to share
// with the other replicas. remaining is taken from the served value.
func (e *entry) fail(f *fault, now time.Time, failRetry time.Duration) (wait time.Duration, n backoffNote) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var remaining time.Duration
	if cur := e.cur.Load(); cur != nil {
		remaining = cur.ExpiresAt.Sub(now)
	}
	wait, e.attempts = retryAfter(f, e.attempts, remaining, failRetry)
	e.lastErr, e.state, e.nextTry, e.noted = f, StateFailing, now.Add(wait), true
	return wait, backoffNote{Class: f.Class, Family: f.Family, Status: f.Status, Code: f.Code, Attempts: e.attempts}
}

// succeed clears the failure state after a fetch succeeded, and reports whether there was a failure
// to clear and whether a back-off note may exist in the store.
func (e *entry) succeed() (hadFailure, noted bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	hadFailure, noted = e.lastErr != nil || e.attempts > 0, e.noted
	e.lastErr, e.attempts, e.nextTry, e.noted, e.state = nil, 0, time.Time{}, false, StateOK
	return hadFailure, noted
}

// recovered clears the failure state because a valid value arrived from elsewhere, and reports
// whether the state changed.
func (e *entry) recovered() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := e.state != StateOK || e.lastErr != nil
	e.lastErr, e.attempts, e.nextTry, e.state = nil, 0, time.Time{}, StateOK
	return changed
}

// reset forgets a failure (a reload may have fixed its cause) and reports whether there was one.
func (e *entry) reset() (wasFailing bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	wasFailing = e.lastErr != nil
	e.lastErr, e.attempts, e.nextTry = nil, 0, time.Time{}
	return wasFailing
}

// learn takes in the shared back-off another replica noted, so that this replica's clients and
// scheduler obey it too, and returns the error callers get while it holds (nil when it is over).
func (e *entry) learn(n backoffNote, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noted = true
	e.attempts = max(e.attempts, n.Attempts)
	if n.Wait <= 0 {
		return nil
	}
	f := &fault{Family: n.Family, Status: n.Status, Code: n.Code, Class: n.Class, Message: "reported by another replica"}
	e.lastErr, e.nextTry, e.state = f, now.Add(n.Wait), StateFailing
	return f.err(n.Wait)
}

// holdForBan puts the entry on hold until the IP ban ends (plus jitter, so the entries do not all
// resume at once).
func (e *entry) holdForBan(until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastErr, e.state = banFault(), StateFailing
	if e.nextTry.Before(until) {
		e.nextTry = until.Add(jitter(banJitter))
	}
}

// retryAt reports whether the entry is failing and when it may be tried again.
func (e *entry) retryAt() (failing bool, next time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr != nil, e.nextTry
}

// currentState returns the state /readyz shows.
func (e *entry) currentState() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

// keepLocal serves t, fetched while the store could not take it, and marks it for writing back.
func (e *entry) keepLocal(t token.Token, now time.Time) token.Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	// One past the generation known: t was fetched after it, so a record of that generation is
	// older (the fence in the store uses the store's generation, never this one).
	gen := int64(1)
	if cur := e.cur.Load(); cur != nil {
		gen = cur.Generation + 1
	}
	r := token.Record{Token: t, Generation: gen}
	e.adoptLocked(r, now)
	e.dirty = true
	return r
}

// dirtyValue returns the value to write back, nil when there is none.
func (e *entry) dirtyValue() *token.Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.dirty {
		return nil
	}
	return e.cur.Load()
}

// wroteBack marks written, a value returned by dirtyValue, as in the store (or superseded there). A
// value fetched alone meanwhile stays dirty for the next write-back.
func (e *entry) wroteBack(written *token.Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur := e.cur.Load(); cur == written || !cur.ExpiresAt.After(written.ExpiresAt) {
		e.dirty = false
	}
}
