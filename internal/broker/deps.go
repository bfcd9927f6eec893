package broker

import (
	"context"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// Store is the state the replicas share. store.Memory and store.Redis implement it; every method is
// safe for concurrent use and returns an error only when the store could not be reached or answered
// wrongly (never for "not found" or "not written").
type Store interface {
	// Get returns the record stored under k; ok is false when there is none.
	Get(ctx context.Context, k token.Key) (rec token.Record, ok bool, err error)
	// Put stores t under k as generation gen+1, but only if the stored generation is still gen (0:
	// nothing stored) and t does not move the stored value's expiry backwards (a write of the same
	// value with an earlier expiry is refused unless it carries an earlier first-seen), in one atomic
	// step. It returns
	// the record stored afterwards and whether t was written. A write is announced to every
	// subscriber, this one included.
	Put(ctx context.Context, k token.Key, gen int64, t token.Token) (cur token.Record, written bool, err error)
	// TryLock takes the refresh lock of k for owner for ttl if nobody holds it, and reports whether it did.
	TryLock(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error)
	// Unlock releases the lock of k if owner still holds it; otherwise it does nothing.
	Unlock(ctx context.Context, k token.Key, owner string) error
	// GetNote returns the short shared note called name (back-off state, bans, cool-downs) and how
	// long it has left to live by the store's clock: notes carry durations, never one replica's
	// wall-clock instant.
	GetNote(ctx context.Context, name string) (value string, ttl time.Duration, ok bool, err error)
	// SetNote stores a note for ttl; ttl <= 0 deletes it.
	SetNote(ctx context.Context, name, value string, ttl time.Duration) error
	// Spend takes one call from the shared budget called name, which allows limit calls per window for
	// all clients of the store together. It returns 0 when the call may be made now; otherwise how long to
	// wait before asking again (the call was not taken).
	Spend(ctx context.Context, name string, limit int, window time.Duration) (wait time.Duration, err error)
	// Subscribe calls fn for every record written by any client of the store until ctx ends, and
	// calls ready each time the subscription is (re)established, so the caller can re-read what it
	// may have missed. It blocks until ctx is done.
	Subscribe(ctx context.Context, ready func(), fn func(token.Key, token.Record)) error
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
}

// Upstream fetches credentials from DingTalk. *dingtalk.Client implements it. Failures are
// *dingtalk.Error.
type Upstream interface {
	AccessToken(ctx context.Context, app dingtalk.App) (dingtalk.Grant, error)
	JSAPITicket(ctx context.Context, api dingtalk.API, accessToken string) (dingtalk.Grant, error)
}
