package store

import (
	"context"
	"errors"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// SuiteTicket is a third-party suite's ticket as DingTalk pushed it (token.SuiteTicket). Value is a
// secret: never log it.
type SuiteTicket = token.SuiteTicket

// errEmptyTicket is returned by PutSuiteTicket for a ticket without a value or a push time.
var errEmptyTicket = errors.New("suite ticket needs a value and a push time")

// isvMemory is the part of Memory that serves third-party apps: suite tickets and leases. Its maps
// are created on first use; Memory.mu guards them.
type isvMemory struct {
	tickets map[string]SuiteTicket // by app
	leases  holds[string]          // by lease name
}

func checkTicket(t SuiteTicket) error {
	if t.Value == "" || toMillis(t.PushedAt) <= 0 {
		return errEmptyTicket
	}
	return nil
}

// GetSuiteTicket returns the suite ticket of app; ok is false when none was stored. It fails only
// when ctx is already done.
func (m *Memory) GetSuiteTicket(ctx context.Context, app string) (SuiteTicket, bool, error) {
	if err := ctx.Err(); err != nil {
		return SuiteTicket{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.isv.tickets[app]
	return t, ok, nil
}

// PutSuiteTicket stores t as the suite ticket of app unless the stored one was pushed at the same
// millisecond or later, in one step. It returns the ticket stored afterwards and whether t was
// written. A ticket without a value or push time is an error. Suite tickets do not expire in the
// store: DingTalk decides when one stops working, and a newer push replaces it.
func (m *Memory) PutSuiteTicket(ctx context.Context, app string, t SuiteTicket) (SuiteTicket, bool, error) {
	if err := ctx.Err(); err != nil {
		return SuiteTicket{}, false, err
	}
	if err := checkTicket(t); err != nil {
		return SuiteTicket{}, false, err
	}
	t.PushedAt = fromMillis(toMillis(t.PushedAt))
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.isv.tickets[app]; ok && !cur.PushedAt.Before(t.PushedAt) {
		return cur, false, nil
	}
	if m.isv.tickets == nil {
		m.isv.tickets = make(map[string]SuiteTicket)
	}
	m.isv.tickets[app] = t
	return t, true, nil
}

// TryLease takes the lease called name for owner for ttl if nobody holds it, or extends it by ttl
// from now if owner already holds it, and reports whether owner holds it afterwards. Unlike a lock, a
// lease is renewed by taking it again (holds.go says why). ttl is rounded up to a whole millisecond;
// a ttl <= 0 is an error.
func (m *Memory) TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	return tryHold(ctx, m, &m.isv.leases, name, owner, ttl, true)
}

// ReleaseLease ends the lease called name if owner holds it; otherwise it does nothing.
func (m *Memory) ReleaseLease(ctx context.Context, name, owner string) error {
	return releaseHold(ctx, m, &m.isv.leases, name, owner)
}
