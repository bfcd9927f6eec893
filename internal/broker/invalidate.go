package broker

import (
	"context"

	"github.com/tokend/tokend/internal/token"
)

// Invalidate handles a client's report that DingTalk rejected value, app's access token. The token is
// replaced only if value is still the current one: a report of an older value returns the current
// token with no upstream call, and concurrent reports share one refresh (across replicas, through the
// store lock, and a cool-down note naming the value checked). DingTalk may hand back the same value;
// it is kept, and a further report of that same value within the cool-down gets *CooldownError (a
// new value reported moments after it was issued is checked: the cool-down is per value, not per app). Other errors are
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
		if err != nil || t.Value != value {
			b.countInvalidation(app, value, t, err)
			return t, err
		}
		// The value this replica just loaded is the one reported: check it like any other.
		cur = &token.Record{Token: t}
	}
	if value != cur.Value && b.sh.isUp() {
		// This replica may not have heard yet of the value reported (pub/sub lags a write by a few
		// milliseconds): the store says which is current.
		if rec, ok, err := b.sh.get(ctx, e.key); err == nil && ok {
			b.adopt(e, rec)
			cur = e.cur.Load()
		}
	}
	if value != cur.Value {
		b.m.invalidations.WithLabelValues(app, "stale").Inc()
		return cur.Token, nil
	}
	if wait := b.checkedLeft(ctx, e, value); wait > 0 {
		// This replica may not have heard yet of the refresh that started the cool-down: if the store
		// holds another value, the report is of an older token after all.
		if b.sh.isUp() {
			if rec, ok, err := b.sh.get(ctx, e.key); err == nil && ok && rec.Value != value && rec.Valid(now) {
				b.adopt(e, rec)
				b.m.invalidations.WithLabelValues(app, "stale").Inc()
				return rec.Token, nil
			}
		}
		b.m.invalidations.WithLabelValues(app, "cooldown").Inc()
		return token.Token{}, &CooldownError{RetryAfter: wait}
	}
	t, err := b.await(ctx, e, &invalidation{value: value})
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
