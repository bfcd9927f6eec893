package store

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// The store has three kinds of named, expiring holds, and they share the code below:
//
//   - the refresh lock of a token (TryLock/Unlock) and the named lock of the flows (TryLockName/
//     UnlockName) are locks: a hold that only a free name gives, not re-entrant, so a second attempt
//     by the same owner fails. They elect the one caller that does a piece of work, and a stale hold
//     (its release was lost) must keep even its own owner out until it lapses rather than let two
//     pieces of work overlap;
//   - the lease (TryLease/ReleaseLease) is a leadership claim its holder renews: taking it again as
//     its owner extends it, which is how a Stream leader stays leader.
//
// The difference is on purpose, so they stay separate operations (and separate Redis key spaces,
// which replicas of different versions must agree on); only taking and releasing are shared.

// holds is Memory's side of one kind of hold: the holder and expiry of each name. The caller holds
// Memory.mu. A nil holds is empty.
type holds[K comparable] map[K]memEntry

// tryHold takes the hold of k in *h for owner for ttl if nobody holds it or, when renew is true, if
// owner already holds it (the expiry is then moved to ttl from now), and reports whether owner holds
// it afterwards. ttl is rounded up to a whole millisecond; a ttl <= 0 is an error.
func tryHold[K comparable](ctx context.Context, m *Memory, h *holds[K], k K, owner string, ttl time.Duration, renew bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, errInvalidTTL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if cur, ok := (*h)[k]; ok && now.Before(cur.expiresAt) && (!renew || cur.value != owner) {
		return false, nil
	}
	if *h == nil {
		*h = make(holds[K])
	}
	(*h)[k] = memEntry{value: owner, expiresAt: now.Add(ceilMillis(ttl))}
	return true, nil
}

// releaseHold ends the hold of k in *h if owner holds it; otherwise it does nothing.
func releaseHold[K comparable](ctx context.Context, m *Memory, h *holds[K], k K, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := (*h)[k]; ok && cur.value == owner {
		delete(*h, k)
	}
	return nil
}

// setNX takes the lock key for owner for ttl (SET NX PX) if nobody holds it, and reports whether it
// did. The caller has checked ttl and wraps the error.
func (s *Redis) setNX(ctx context.Context, key, owner string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	err := s.c.SetArgs(ctx, key, owner, redis.SetArgs{Mode: "NX", TTL: ceilMillis(ttl)}).Err()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, redis.Nil):
		return false, nil
	default:
		s.failed(err)
		return false, err
	}
}

// release deletes key if owner holds it (unlockScript); otherwise it does nothing. The caller wraps
// the error.
func (s *Redis) release(ctx context.Context, key, owner string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := unlockScript.Run(ctx, s.c, []string{key}, owner).Err(); err != nil && !errors.Is(err, redis.Nil) {
		s.failed(err)
		return err
	}
	return nil
}
