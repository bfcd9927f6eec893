package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokend/tokend/internal/token"
)

// DefaultOpTimeout bounds every Redis operation when RedisOptions.OpTimeout is not set.
const DefaultOpTimeout = time.Second

// DefaultPrefix is the key prefix when RedisOptions.Prefix is not set.
const DefaultPrefix = "tokend"

// Timing of Redis.Subscribe's own connection care.
const (
	// subscribePingEvery is how long a quiet subscription waits before it checks the connection with
	// PING; a PING not answered within the operation timeout drops the connection and re-subscribes.
	subscribePingEvery = 5 * time.Second
	// subscribeMinBackoff and subscribeMaxBackoff bound the wait between attempts to re-subscribe.
	subscribeMinBackoff = 50 * time.Millisecond
	subscribeMaxBackoff = 2 * time.Second
)

// clusterReloadInterval bounds how stale a Cluster client's map of slots may get. go-redis re-reads
// it at once only on MOVED or ASK, which a dead master never sends; the store also asks for a re-read
// after every failed operation (see Redis.failed).
const clusterReloadInterval = 10 * time.Second

// Hash fields of a record.
const (
	fieldGeneration = "generation"
	fieldValue      = "value"
	fieldExpires    = "expires_ms"
	fieldFirstSeen  = "first_seen_ms"
	fieldFetchedAt  = "fetched_ms"
)

// putScript is Store.Put in one atomic step. The expiry of a value never moves backwards, unless the
// write carries an earlier first-seen of it (a jsapi ticket's 24 h cap then moves it back, rightly);
// a different value at the expected generation replaces the stored one whatever the two expiries say
// (see Memory.Put for why).
//
// KEYS[1] the record. ARGV: 1 expected generation, 2 value, 3 expiry ms, 4 first-seen ms, 5 fetched-at
// ms, 6 when the key may be dropped (ms since the epoch), 7 channel, 8 and 9 the announcement without
// its generation. It returns {written 0/1, generation, value, expiry ms, first-seen ms, fetched-at ms}
// of the record stored afterwards; a record written before fetched_ms existed reports 0 for it.
var putScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'generation', 'value', 'expires_ms', 'first_seen_ms', 'fetched_ms')
local g = tonumber(cur[1]) or 0
if g ~= tonumber(ARGV[1]) or (g > 0 and ARGV[2] == cur[2] and tonumber(ARGV[3]) < (tonumber(cur[3]) or 0)
    and tonumber(ARGV[4]) >= (tonumber(cur[4]) or 0)) then
  return {0, g, cur[2] or '', cur[3] or '0', cur[4] or '0', cur[5] or '0'}
end
local ng = g + 1
local gs = string.format('%d', ng)
redis.call('HSET', KEYS[1], 'generation', gs, 'value', ARGV[2], 'expires_ms', ARGV[3], 'first_seen_ms', ARGV[4],
  'fetched_ms', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8] .. string.len(gs) .. ':' .. gs .. ',' .. ARGV[9])
return {1, ng, ARGV[2], ARGV[3], ARGV[4], ARGV[5]}
`)

// spendScript is Store.Spend in one atomic step: a fixed-window counter on the Redis server's clock,
// so that replicas whose clocks disagree still share one window.
//
// KEYS[1] the counter key without its window index; the script appends the index, which only it
// knows. Every such key shares KEYS[1]'s hash tag, hence its Cluster slot, which is what lets the
// script touch a key it did not declare. ARGV: 1 limit, 2 window ms. It returns 0 when the call was
// taken, otherwise the milliseconds to the end of the window (at least 1).
var spendScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[2])
local idx = math.floor(now / w)
local key = KEYS[1] .. string.format('%d', idx)
local n = redis.call('INCR', key)
redis.call('PEXPIRE', key, 2 * w)
if n <= tonumber(ARGV[1]) then
  return 0
end
redis.call('DECR', key)
return math.max(1, (idx + 1) * w - now)
`)

// getNoteScript returns {value, milliseconds to live} of KEYS[1], or nil when there is none.
var getNoteScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
return {v, redis.call('PTTL', KEYS[1])}
`)

// unlockScript deletes KEYS[1] only if it still holds ARGV[1], the owner.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Redis is a store shared by every replica that uses the same Redis and prefix. All methods are safe
// for concurrent use, and none takes longer than the operation timeout (Subscribe aside, which runs
// until its context ends), even when Redis is frozen or the network drops packets.
//
// Keys, with P the prefix: the record of an app's kind is the hash "P:{app}:kind" (fields generation,
// value, expires_ms, first_seen_ms, fetched_ms) and its lock "P:{app}:kind:lock", so that every key of
// one app shares a Cluster slot; a note is "P:note:name"; the counter of a budget in its window number
// i (Unix ms / window ms) is "{P}:budget:name:i", all budgets in the prefix's slot because the
// window's key is chosen inside a script; writes are announced on the channel "P:events".
//
// Errors wrap go-redis errors; they never contain token values, note values or passwords.
type Redis struct {
	c         redis.UniversalClient
	prefix    string
	channel   string
	opTimeout time.Duration
	pingEvery time.Duration // subscribePingEvery; tests shorten it
}

// NewRedis returns a store on c, which it then owns (Close closes it). prefix must not contain '{'
// or '}' (empty means DefaultPrefix); opTimeout <= 0 means DefaultOpTimeout. c should have its own
// dial, read, write and pool timeouts set, as OpenRedis does: NewRedis bounds each operation's
// context, which go-redis honours only with ContextTimeoutEnabled.
func NewRedis(c redis.UniversalClient, prefix string, opTimeout time.Duration) *Redis {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if opTimeout <= 0 {
		opTimeout = DefaultOpTimeout
	}
	return &Redis{c: c, prefix: prefix, channel: prefix + ":events", opTimeout: opTimeout, pingEvery: subscribePingEvery}
}

// Close closes the client. Calls in progress fail; Subscribe returns.
func (s *Redis) Close() error {
	return s.c.Close()
}

// recordKey is "P:{app}:kind", or "P:{app}:corp:<corp>:kind" for a corp's credential: in the app's
// Cluster slot either way (corp ids hold no ':', see dingtalk.ValidCorpID).
func (s *Redis) recordKey(k token.Key) string {
	if k.Corp != "" {
		return s.prefix + ":{" + k.App + "}:corp:" + k.Corp + ":" + string(k.Kind)
	}
	return s.prefix + ":{" + k.App + "}:" + string(k.Kind)
}

func (s *Redis) lockKey(k token.Key) string {
	return s.recordKey(k) + ":lock"
}

func (s *Redis) noteKey(name string) string {
	return s.prefix + ":note:" + name
}

// budgetKey is the key of budget name without its window index, which spendScript appends.
func (s *Redis) budgetKey(name string) string {
	return "{" + s.prefix + "}:budget:" + name + ":"
}

// op bounds ctx with the operation timeout.
func (s *Redis) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opTimeout)
}

// Get returns the record stored under k; ok is false when there is none.
func (s *Redis) Get(ctx context.Context, k token.Key) (token.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return token.Record{}, false, err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	vals, err := s.c.HMGet(ctx, s.recordKey(k), fieldGeneration, fieldValue, fieldExpires, fieldFirstSeen, fieldFetchedAt).Result()
	if err != nil {
		s.failed(err)
		return token.Record{}, false, fmt.Errorf("redis get %s: %w", k, err)
	}
	if len(vals) != 5 || vals[0] == nil {
		return token.Record{}, false, nil
	}
	rec, err := parseRecord(vals)
	if err != nil {
		return token.Record{}, false, fmt.Errorf("redis get %s: %w", k, err)
	}
	return rec, true, nil
}

// parseRecord decodes {generation, value, expiry ms, first-seen ms, fetched-at ms}, as strings or
// integers. A missing fetched-at (nil: a record written by a tokend that did not keep it) is the zero
// time.
func parseRecord(vals []any) (token.Record, error) {
	if len(vals) != 5 {
		return token.Record{}, fmt.Errorf("record: %w", errMalformed)
	}
	var nums [5]int64
	for _, i := range []int{0, 2, 3, 4} {
		switch v := vals[i].(type) {
		case nil:
			if i != 4 {
				return token.Record{}, fmt.Errorf("record: %w", errMalformed)
			}
		case int64:
			nums[i] = v
		case string:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return token.Record{}, fmt.Errorf("record: %w", errMalformed)
			}
			nums[i] = n
		default:
			return token.Record{}, fmt.Errorf("record: %w", errMalformed)
		}
	}
	value, ok := vals[1].(string)
	if !ok {
		return token.Record{}, fmt.Errorf("record: %w", errMalformed)
	}
	return token.Record{
		Token: token.Token{
			Value:     value,
			ExpiresAt: fromMillis(nums[2]),
			FirstSeen: fromMillis(nums[3]),
			FetchedAt: fromMillis(nums[4]),
		},
		Generation: nums[0],
	}, nil
}

// Put stores t under k as generation gen+1 if the stored generation is gen (0: nothing stored) and
// t does not move the expiry of the stored value backwards (see Memory.Put), and announces the whole record on the channel, all in
// one script. It returns the record stored afterwards and whether t was written. Times are kept to the
// millisecond; the key expires RecordRetention after t.ExpiresAt (by the Redis server's clock).
//
// go-redis retries a command whose connection broke; if the first attempt wrote but its answer was
// lost, the retry reports written false with the caller's own token as the current record.
func (s *Redis) Put(ctx context.Context, k token.Key, gen int64, t token.Token) (token.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return token.Record{}, false, err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	exp := toMillis(t.ExpiresAt)
	head, tail := eventParts(k, t)
	res, err := putScript.Run(ctx, s.c, []string{s.recordKey(k)},
		gen, t.Value, exp, toMillis(t.FirstSeen), toMillis(t.FetchedAt), exp+RecordRetention.Milliseconds(),
		s.channel, head, tail,
	).Slice()
	if err != nil {
		s.failed(err)
		return token.Record{}, false, fmt.Errorf("redis put %s: %w", k, err)
	}
	if len(res) != 6 {
		return token.Record{}, false, fmt.Errorf("redis put %s: reply: %w", k, errMalformed)
	}
	written, ok := res[0].(int64)
	if !ok {
		return token.Record{}, false, fmt.Errorf("redis put %s: reply: %w", k, errMalformed)
	}
	rec, err := parseRecord(res[1:])
	if err != nil {
		return token.Record{}, false, fmt.Errorf("redis put %s: %w", k, err)
	}
	return rec, written == 1, nil
}

// TryLock takes the lock of k for owner for ttl (SET NX PX) if nobody holds it, and reports whether it
// did. A lock is not re-entrant: its holder cannot take it again (holds.go says why). ttl is rounded
// up to a whole millisecond; a ttl <= 0 is an error.
func (s *Redis) TryLock(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("redis lock %s: %w", k, errInvalidTTL)
	}
	ok, err := s.setNX(ctx, s.lockKey(k), owner, ttl)
	if err != nil {
		return false, fmt.Errorf("redis lock %s: %w", k, err)
	}
	return ok, nil
}

// Unlock releases the lock of k if owner still holds it; otherwise it does nothing.
func (s *Redis) Unlock(ctx context.Context, k token.Key, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.release(ctx, s.lockKey(k), owner); err != nil {
		return fmt.Errorf("redis unlock %s: %w", k, err)
	}
	return nil
}

// GetNote returns the note called name and how long it has left to live, by the Redis server's
// clock; ok is false when there is none or it expired.
func (s *Redis) GetNote(ctx context.Context, name string) (string, time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", 0, false, err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	res, err := getNoteScript.Run(ctx, s.c, []string{s.noteKey(name)}).Slice()
	switch {
	case errors.Is(err, redis.Nil):
		return "", 0, false, nil
	case err != nil:
		s.failed(err)
		return "", 0, false, fmt.Errorf("redis get note: %w", err)
	}
	if len(res) != 2 {
		return "", 0, false, fmt.Errorf("redis get note: reply: %w", errMalformed)
	}
	v, ok1 := res[0].(string)
	ms, ok2 := res[1].(int64)
	if !ok1 || !ok2 {
		return "", 0, false, fmt.Errorf("redis get note: reply: %w", errMalformed)
	}
	if ms < 0 { // -2: gone between the two commands cannot happen in a script; -1: no TTL (not ours)
		ms = 0
	}
	return v, time.Duration(ms) * time.Millisecond, true, nil
}

// SetNote stores value as the note called name for ttl (rounded up to a whole millisecond); a ttl
// <= 0 deletes the note.
func (s *Redis) SetNote(ctx context.Context, name, value string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	var err error
	if ttl <= 0 {
		err = s.c.Del(ctx, s.noteKey(name)).Err()
	} else {
		err = s.c.Set(ctx, s.noteKey(name), value, ceilMillis(ttl)).Err()
	}
	if err != nil {
		s.failed(err)
		return fmt.Errorf("redis set note: %w", err)
	}
	return nil
}

// Spend takes one call from the budget called name, shared by every client of the same Redis and
// prefix, which allows limit calls per window. It returns 0 when the call may be made now; otherwise
// how long to wait before asking again (at most window), and the call was not taken.
//
// Windows are fixed: window number i runs from i*window to (i+1)*window in Unix time, read from the
// Redis server's clock, so replicas with skewed clocks agree. window is rounded up to a whole
// millisecond. A limit or window that is not positive is an error.
func (s *Redis) Spend(ctx context.Context, name string, limit int, window time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkBudget(limit, window); err != nil {
		return 0, fmt.Errorf("redis spend %s: %w", name, err)
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	wait, err := spendScript.Run(ctx, s.c, []string{s.budgetKey(name)}, limit, ceilMillis(window).Milliseconds()).Int64()
	if err != nil {
		s.failed(err)
		return 0, fmt.Errorf("redis spend %s: %w", name, err)
	}
	if wait < 0 {
		return 0, fmt.Errorf("redis spend %s: reply: %w", name, errMalformed)
	}
	return time.Duration(wait) * time.Millisecond, nil
}

// Ping reports whether Redis answers.
func (s *Redis) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.c.Ping(ctx).Err(); err != nil {
		s.failed(err)
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// failed is called with every error from Redis. On a Cluster it asks for the map of slots to be
// re-read (go-redis coalesces and paces these), so that after a failover the client finds the new
// master within a second or so instead of dialling the dead one until the next periodic reload.
func (s *Redis) failed(err error) {
	if cc, ok := s.c.(*redis.ClusterClient); ok && err != nil && !errors.Is(err, redis.Nil) {
		cc.ReloadState(context.Background())
	}
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
