package broker

import (
	"context"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// Invalidate handles a client's report that DingTalk rejected value, app's access token. The token is
// replaced only if value is still the current one: a report of an older value returns the current
// token with no upstream call, and concurrent reports share one refresh (across replicas, through the
// store lock and the generation check). DingTalk may hand back the same value; it is kept, and a
// further report of the current value within the cool-down gets *CooldownError. Other errors are
// those of Token.
func (b *Broker) Invalidate(ctx context.Context, app, value string) (token.Token, error) {
	e, err := b.entry(token.Key{App: app, Kind: token.AccessToken})
	if err != nil {
		return token.Token{}, err
	}
	now := b.now()
	cur := e.cur.Load()
	if cur == nil || !cur.Valid(now) {
		t, err := b.await(ctx, e, nil)
		b.countInvalidation(app, value, t, err)
		return t, err
	}
	if value != cur.Value {
		b.m.invalidations.WithLabelValues(app, "stale").Inc()
		return cur.Token, nil
	}
	if wait := b.cooldownLeft(ctx, e, now); wait > 0 {
		// This replica may not have heard yet of the refresh that started the cool-down: if the store
		// holds another value, the report is of an older token after all.
		if b.storeUp.Load() {
			if rec, ok, err := b.storeGet(ctx, e.key); err == nil && ok && rec.Value != value && rec.Valid(now) {
				b.adopt(e, rec)
				b.m.invalidations.WithLabelValues(app, "stale").Inc()
				return rec.Token, nil
			}
		}
		b.m.invalidations.WithLabelValues(app, "cooldown").Inc()
		return token.Token{}, &CooldownError{RetryAfter: wait}
	}
	t, err := b.await(ctx, e, &invalidation{value: value, gen: cur.Generation})
	b.countInvalidation(app, value, t, err)
	return t, err
}

func (b *Broker) countInvalidation(app, reported string, got token.Token, err error) {
	result := "refreshed"
	switch {
	case err != nil:
		result = "error"
	case got.Value == reported:
		result = "unchanged"
	}
	b.m.invalidations.WithLabelValues(app, result).Inc()
}

// cooldownLeft is how long reports of e's current value must still wait: the cool-down that the last
// invalidation-driven refresh of the app started, as this replica or the store knows it.
func (b *Broker) cooldownLeft(ctx context.Context, e *entry, now time.Time) time.Duration {
	e.mu.Lock()
	until := e.cooldownUntil
	e.mu.Unlock()
	if b.storeUp.Load() {
		sctx, cancel := b.storeCtx(ctx)
		v, _, ok, err := b.store.GetNote(sctx, cooldownNote(e.key.App))
		cancel()
		if err != nil {
			b.storeFailed(err)
		} else if ok {
			if ms, perr := strconv.ParseInt(v, 10, 64); perr == nil && time.UnixMilli(ms).After(until) {
				until = time.UnixMilli(ms)
			}
		}
	}
	if !until.After(now) {
		return 0
	}
	return until.Sub(now)
}
