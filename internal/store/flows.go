package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The operations of this file serve the flows beyond tokens (user-token exchange, robots): a short
// lock by name and a sliding-window counter. They behave the same on
// Memory (memory_flows.go) and Redis, which flows_test.go checks on memory, miniredis and a real
// redis-server.

// slotScript is Redis.TakeSlot in one atomic step: a sliding-window log on the Redis server's clock.
//
// KEYS[1] the window's sorted set (member: a caller-chosen unique id, score: when it was taken, ms).
// ARGV: 1 limit, 2 window ms, 3 the member. It returns 0 when the slot was taken, otherwise the
// milliseconds until the oldest slot in the window leaves it (at least 1).
var slotScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], w)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + w - now)
`)

// errEmptyID is returned by TakeSlot for an empty slot id.
var errEmptyID = errors.New("slot id must not be empty")

func (s *Redis) namedLockKey(name string) string { return s.prefix + ":lock:" + name }

func (s *Redis) windowKey(name string) string { return s.prefix + ":window:" + name }

// TryLockName takes the lock called name for owner for ttl (SET NX PX) if nobody holds it, and
// reports whether it did. Like TryLock's, the lock is not re-entrant; these locks share no key with
// the refresh locks of TryLock. ttl is rounded up to a whole millisecond; a ttl <= 0 is an error.
func (s *Redis) TryLockName(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("redis lock: %w", errInvalidTTL)
	}
	ok, err := s.setNX(ctx, s.namedLockKey(name), owner, ttl)
	if err != nil {
		return false, fmt.Errorf("redis lock: %w", err)
	}
	return ok, nil
}

// UnlockName releases the lock called name if owner still holds it; otherwise it does nothing.
func (s *Redis) UnlockName(ctx context.Context, name, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.release(ctx, s.namedLockKey(name), owner); err != nil {
		return fmt.Errorf("redis unlock: %w", err)
	}
	return nil
}

// TakeSlot takes one slot, identified by id (unique per call), in the sliding window called name,
// shared by every client of the same Redis and prefix, which admits limit slots in any period of
// window. It returns 0 when the slot was taken; otherwise how long until the oldest slot leaves the
// window (at most window), and nothing was taken. Time is the Redis server's, so replicas with skewed
// clocks agree. A limit or window that is not positive, or an empty id, is an error.
func (s *Redis) TakeSlot(ctx context.Context, name string, limit int, window time.Duration, id string) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkBudget(limit, window); err != nil {
		return 0, fmt.Errorf("redis take slot: %w", err)
	}
	if id == "" {
		return 0, fmt.Errorf("redis take slot: %w", errEmptyID)
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	wait, err := slotScript.Run(ctx, s.c, []string{s.windowKey(name)}, limit, ceilMillis(window).Milliseconds(), id).Int64()
	if err != nil {
		s.failed(err)
		return 0, fmt.Errorf("redis take slot: %w", err)
	}
	if wait < 0 {
		return 0, fmt.Errorf("redis take slot: reply: %w", errMalformed)
	}
	return time.Duration(wait) * time.Millisecond, nil
}
