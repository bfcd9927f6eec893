package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// putTicketScript is Redis.PutSuiteTicket in one atomic step.
//
// KEYS[1] the app's suite ticket hash. ARGV: 1 value, 2 push time ms. It returns {written 0/1, value,
// push time ms} of the ticket stored afterwards.
var putTicketScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'value', 'pushed_ms')
local p = tonumber(cur[2])
if cur[1] and p and p >= tonumber(ARGV[2]) then
  return {0, cur[1], cur[2]}
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'pushed_ms', ARGV[2])
return {1, ARGV[1], ARGV[2]}
`)

// leaseScript is Redis.TryLease: extend the lease if ARGV[1] holds it, take it if it is free.
//
// KEYS[1] the lease. ARGV: 1 owner, 2 ttl ms. It returns 1 if the owner holds it afterwards, else 0.
var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// suiteTicketKey is "P:{app}:suite_ticket", in the app's Cluster slot like its records.
func (s *Redis) suiteTicketKey(app string) string {
	return s.prefix + ":{" + app + "}:suite_ticket"
}

// leaseKey is "P:lease:name".
func (s *Redis) leaseKey(name string) string {
	return s.prefix + ":lease:" + name
}

// GetSuiteTicket returns the suite ticket of app; ok is false when none is stored. Its errors never
// contain the ticket.
func (s *Redis) GetSuiteTicket(ctx context.Context, app string) (SuiteTicket, bool, error) {
	if err := ctx.Err(); err != nil {
		return SuiteTicket{}, false, err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	vals, err := s.c.HMGet(ctx, s.suiteTicketKey(app), "value", "pushed_ms").Result()
	if err != nil {
		s.failed(err)
		return SuiteTicket{}, false, fmt.Errorf("redis get suite ticket %s: %w", app, err)
	}
	if len(vals) != 2 || vals[0] == nil {
		return SuiteTicket{}, false, nil
	}
	t, err := parseTicket(vals[0], vals[1])
	if err != nil {
		return SuiteTicket{}, false, fmt.Errorf("redis get suite ticket %s: %w", app, err)
	}
	return t, true, nil
}

// PutSuiteTicket stores t as the suite ticket of app unless the stored one was pushed at the same
// millisecond or later, in one script. It returns the ticket stored afterwards and whether t was
// written. A ticket without a value or push time is an error. The key has no expiry (see
// Memory.PutSuiteTicket). Its errors never contain the ticket.
func (s *Redis) PutSuiteTicket(ctx context.Context, app string, t SuiteTicket) (SuiteTicket, bool, error) {
	if err := ctx.Err(); err != nil {
		return SuiteTicket{}, false, err
	}
	if err := checkTicket(t); err != nil {
		return SuiteTicket{}, false, err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	res, err := putTicketScript.Run(ctx, s.c, []string{s.suiteTicketKey(app)}, t.Value, toMillis(t.PushedAt)).Slice()
	if err != nil {
		s.failed(err)
		return SuiteTicket{}, false, fmt.Errorf("redis put suite ticket %s: %w", app, err)
	}
	if len(res) != 3 {
		return SuiteTicket{}, false, fmt.Errorf("redis put suite ticket %s: reply: %w", app, errMalformed)
	}
	written, ok := res[0].(int64)
	if !ok {
		return SuiteTicket{}, false, fmt.Errorf("redis put suite ticket %s: reply: %w", app, errMalformed)
	}
	cur, err := parseTicket(res[1], res[2])
	if err != nil {
		return SuiteTicket{}, false, fmt.Errorf("redis put suite ticket %s: %w", app, err)
	}
	return cur, written == 1, nil
}

func parseTicket(value, pushed any) (SuiteTicket, error) {
	v, ok := value.(string)
	if !ok {
		return SuiteTicket{}, fmt.Errorf("suite ticket: %w", errMalformed)
	}
	var ms int64
	switch p := pushed.(type) {
	case int64:
		ms = p
	case string:
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return SuiteTicket{}, fmt.Errorf("suite ticket: %w", errMalformed)
		}
		ms = n
	default:
		return SuiteTicket{}, fmt.Errorf("suite ticket: %w", errMalformed)
	}
	return SuiteTicket{Value: v, PushedAt: fromMillis(ms)}, nil
}

// TryLease takes the lease called name for owner for ttl if nobody holds it, or extends it to ttl
// from now (by the Redis server's clock) if owner already holds it, in one script, and reports whether
// owner holds it afterwards. ttl is rounded up to a whole millisecond; a ttl <= 0 is an error.
func (s *Redis) TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("redis lease %s: %w", name, errInvalidTTL)
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	n, err := leaseScript.Run(ctx, s.c, []string{s.leaseKey(name)}, owner, ceilMillis(ttl).Milliseconds()).Int64()
	if err != nil {
		s.failed(err)
		return false, fmt.Errorf("redis lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease ends the lease called name if owner holds it; otherwise it does nothing.
func (s *Redis) ReleaseLease(ctx context.Context, name, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// A lease is released exactly as a lock is: compare and delete.
	if err := s.release(ctx, s.leaseKey(name), owner); err != nil {
		return fmt.Errorf("redis release lease %s: %w", name, err)
	}
	return nil
}
