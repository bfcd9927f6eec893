package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
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
	lastErr      *dingtalk.Error // last upstream failure, nil after a success
	nextTry      time.Time       // no upstream call before this (back-off or slow retry)
	attempts     int             // consecutive retryable failures
	dirty        bool            // cur was fetched while the store was down and must be written back
	checked      string          // fingerprint of the value last checked after a report, unchanged
	checkedUntil time.Time       // reports of that value before this get 429
	noted        bool            // a back-off note for this key may exist in the store
	changed      chan struct{}   // closed and replaced whenever cur changes

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
	if !e.lastErr.Retryable() {
		return &RejectedError{Upstream: e.lastErr}
	}
	return &UnavailableError{RetryAfter: e.nextTry.Sub(now), Upstream: e.lastErr}
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
