package broker

import (
	"context"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Names of the budgets all replicas share in the store.
const (
	// budgetNote: token and ticket calls (upstream.max_rps).
	budgetNote = "upstream"
	// egressBudget: every Part 2 call to DingTalk (proxy.max_rps).
	egressBudget = "egress"
)

// newBucket is this replica's own pacing of perSecond calls, with a burst of one second's worth. It
// measures real time whatever clock the broker is given: pacing is about real calls.
func newBucket(perSecond float64) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
}

// spend takes one DingTalk call from the budgets: this replica's token bucket, then the one all
// replicas share.
func (b *Broker) spend(ctx context.Context) error {
	if err := b.budget.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return context.DeadlineExceeded // the wait would outlast ctx
	}
	return b.spendShared(ctx)
}

// spendShared takes one call from the budget shared by every replica (max_rps per second in all),
// waiting while it is spent. Without the store, the local budget alone paces this replica.
func (b *Broker) spendShared(ctx context.Context) error {
	limit := max(1, int(math.Ceil(b.maxRPS)))
	for b.sh.isUp() {
		wait, err := b.sh.spend(ctx, budgetNote, limit)
		if err != nil {
			return ctx.Err() // nil unless ctx ended: the local budget alone paces this replica
		}
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait + jitter(wait/4+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Egress takes one unit of the egress budget (proxy.max_rps) for one Part 2 call to DingTalk (proxy,
// user tokens, Stream tickets, robot sends), and never waits. The budget is shared by every replica
// through the store, like the token budget; while the store is down this replica keeps to it alone
// with a local bucket. During an IP ban (met by any replica, on any call) no call may be made.
//
// It returns nil when the call may be made; *RateLimitedError with RetryAfter when the budget is spent
// (the call was not taken); *UnavailableError with RetryAfter and Code "ip_ban" during a ban; ctx's
// error when ctx ended. It is safe for concurrent use.
func (b *Broker) Egress(ctx context.Context) error {
	now := b.now()
	if until := time.UnixMilli(b.banUntil.Load()); now.Before(until) {
		return banFault().err(until.Sub(now))
	}
	if b.sh.isUp() {
		wait, banned, err := b.egressShared(ctx, now)
		switch {
		case err == nil && banned > 0:
			return banFault().err(banned)
		case err == nil && wait > 0:
			return &RateLimitedError{RetryAfter: wait}
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
	r := b.egress.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel() // not taken
		return &RateLimitedError{RetryAfter: d}
	}
	return nil
}

// egressShared reads the shared ban and takes one unit of the shared egress budget: banned is what
// is left of a ban, wait how long until the budget has room.
func (b *Broker) egressShared(ctx context.Context, now time.Time) (wait, banned time.Duration, err error) {
	left, err := b.sh.ban(ctx)
	if err != nil {
		return 0, 0, err
	}
	if left > 0 {
		b.banUntil.Store(now.Add(left).UnixMilli())
		return 0, left, nil
	}
	wait, err = b.sh.spend(ctx, egressBudget, b.egressRPS)
	return wait, 0, err
}

// ReportBan starts the shared IP-ban pause (five minutes, on every replica: they share the egress
// IP) after a ban answer to a call the broker did not make (a proxied call): the same pause a ban met
// on a token call starts. Token and ticket refreshes and Egress wait it out; valid tokens are still
// served from memory. It is safe for concurrent use.
func (b *Broker) ReportBan(ctx context.Context) {
	b.log.Error("DingTalk bans this egress IP: calls paused on every replica", "upstream_code", banFault().Code,
		"pause", banPause.String())
	b.noteBan(ctx, b.now())
}

// noteBan records a ban starting at now, here and in the store.
func (b *Broker) noteBan(ctx context.Context, now time.Time) {
	b.banUntil.Store(now.Add(banPause).UnixMilli())
	if b.sh.isUp() {
		b.sh.setBan(ctx, banPause)
	}
}
