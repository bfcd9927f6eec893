package broker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// failed records a failed fetch (in the entry and in the store) and returns the error for the
// callers.
func (b *Broker) failed(ctx context.Context, e *entry, err error) error {
	if ctx.Err() != nil {
		// The refresh was cut short on this side (shutdown, or its own deadline): DingTalk said
		// nothing, so nothing is recorded, here or in the store. A replica waiting on the lock
		// (released on the way out) takes the refresh over instead of obeying a false back-off.
		return &UnavailableError{RetryAfter: time.Second}
	}
	b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "failure").Inc()
	var nc *noCallError
	if errors.As(err, &nc) {
		// The ticket's access token could not be had: no ticket call was made, and the token's entry
		// recorded its own failure. The ticket's callers get the token's error.
		return nc.err
	}
	f := faultOf(err)
	if f == nil {
		return err // not DingTalk's answer
	}
	now := b.now()
	before := e.status().UpstreamCode
	wait, note := e.fail(f, now, b.failRetry)
	b.setState(e)
	level := slog.LevelWarn
	if !f.retryable() || f.Class == dingtalk.ClassBanned {
		level = slog.LevelError
	}
	if f.local {
		// No DingTalk call (waiting for a suite ticket): nothing for the audit log, and the log says
		// it once, as a warning (a normal state before the first push), not at every look at the store.
		level = slog.LevelWarn
		if before == f.Code {
			level = slog.LevelDebug
		}
	} else {
		b.onRefresh(RefreshEvent{Key: e.key, Result: "failure", UpstreamCode: f.Code})
	}
	b.log.Log(ctx, level, "refresh failed",
		"app", e.key.App, "kind", e.key.Kind, "corp", e.key.Corp, "upstream_code", f.Code, "family", f.Family,
		"retryable", f.retryable(), "retry_in", wait.Round(time.Millisecond).String(), "detail", f.Message)
	if b.sh.isUp() {
		b.sh.setBackoff(ctx, e.key, note, wait)
	}
	if f.Class == dingtalk.ClassBanned {
		b.noteBan(ctx, now)
	}
	return f.err(wait)
}

// succeeded records a fetch of t (prev: the value before) that this replica made: it clears e's
// failure state, here and in the store, and tells the audit log.
func (b *Broker) succeeded(ctx context.Context, e *entry, inv *invalidation, t, prev token.Token) {
	hadFailure, noted := e.succeed()
	b.setState(e)
	if hadFailure {
		b.log.Info("refresh recovered", "app", e.key.App, "kind", e.key.Kind, "corp", e.key.Corp)
	}
	if (noted || hadFailure) && b.sh.isUp() {
		b.sh.clearBackoff(ctx, e.key)
	}
	b.onRefresh(RefreshEvent{Key: e.key, Result: "success", Fingerprint: token.Fingerprint(t.Value),
		Changed: t.Value != prev.Value, Invalidation: inv != nil})
	b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "success").Inc()
}

// gate returns an error instead of letting a fetch happen while DingTalk bans this IP or the shared
// back-off of e says to wait. noted identifies the back-off note as read (0 for none).
func (b *Broker) gate(ctx context.Context, e *entry) (noted uint32, err error) {
	if err := b.gateLocal(e); err != nil {
		return 0, err
	}
	now := b.now()
	if left, err := b.sh.ban(ctx); err == nil && left > 0 {
		// Another replica was banned: this one shares the IP, so it waits the ban out too.
		until := now.Add(left)
		b.banUntil.Store(until.UnixMilli())
		return 0, b.waitBan(e, until, now)
	}
	n, ok, err := b.sh.backoff(ctx, e.key)
	if err != nil || !ok {
		return 0, nil
	}
	if err := e.learn(n, now); err != nil {
		b.setState(e)
		return n.Write, err
	}
	return n.Write, nil
}

// gateLocal is gate without the store: this replica's own view of a ban and of e's back-off.
func (b *Broker) gateLocal(e *entry) error {
	now := b.now()
	if until := time.UnixMilli(b.banUntil.Load()); now.Before(until) {
		return b.waitBan(e, until, now)
	}
	return e.blocked(now)
}

// waitBan puts e on hold until the IP ban ends and returns the error its callers get meanwhile.
func (b *Broker) waitBan(e *entry, until, now time.Time) error {
	e.holdForBan(until)
	b.setState(e)
	return banFault().err(until.Sub(now))
}

// markChecked records that value, reported invalid, was just checked with DingTalk and came back
// unchanged: further reports of that same value within the cool-down get 429, and a replica waiting
// to check it finds it checked.
func (b *Broker) markChecked(ctx context.Context, e *entry, value string) {
	e.markChecked(value, b.now().Add(cooldown))
	if b.sh.isUp() {
		b.sh.setChecked(ctx, e.key, value, cooldown)
	}
}

// checkedLeft is how long reports of value must still wait: what is left of the cool-down of its
// last check, as this replica or the store knows it (0: not checked lately).
func (b *Broker) checkedLeft(ctx context.Context, e *entry, value string) time.Duration {
	left := e.checkedLeft(value, b.now())
	if b.sh.isUp() {
		if d, err := b.sh.checked(ctx, e.key, value); err == nil {
			left = max(left, d)
		}
	}
	return max(left, 0)
}

// keepLocal serves t from memory and marks it for writing back to the store.
func (b *Broker) keepLocal(e *entry, t token.Token) token.Record {
	r := e.keepLocal(t, b.now())
	b.adopted(e)
	return r
}

// adopt serves rec if it is newer than e's value, and updates what depends on the served value.
func (b *Broker) adopt(e *entry, rec token.Record) {
	if e.adopt(rec, b.now()) {
		b.adopted(e)
	}
}

func (b *Broker) adopted(e *entry) {
	cur := e.cur.Load()
	if cur == nil {
		return
	}
	if e.key.Corp != "" {
		if cur.Valid(b.now()) {
			b.clearFailure(e)
		}
		return // corps are never a label
	}
	b.m.expiry.WithLabelValues(e.key.App, string(e.key.Kind)).Set(float64(cur.ExpiresAt.UnixMilli()) / 1000)
	if cur.Valid(b.now()) {
		b.clearFailure(e) // another replica's success ends this one's failure state too
	}
}

// clearFailure puts e back in the ok state.
func (b *Broker) clearFailure(e *entry) {
	if e.recovered() {
		b.setState(e)
	}
}
