package broker

import (
	"context"
	"time"

	"github.com/tokend/tokend/internal/token"
)

const (
	// ticketMaxAge: a jsapi ticket never lives longer than this from its creation (dingtalk.md).
	ticketMaxAge = 24 * time.Hour
	// banPause: how long DingTalk's per-IP block lasts.
	banPause = 5 * time.Minute
	// cooldown: reports of a token that was just checked get 429 for this long.
	cooldown = 30 * time.Second
	// pollEvery bounds how long a replica waiting for another's write goes without re-reading the
	// store, should the pub/sub message be lost.
	pollEvery = 250 * time.Millisecond
	// minGap keeps the scheduler from spinning on an entry that cannot make progress.
	minGap = time.Second
)

// invalidation asks a refresh to replace value, reported invalid by a client while it was the
// current value.
type invalidation struct {
	value string
}

// refresh makes e's value valid and fresh (or, with inv, replaces the reported value), calling
// DingTalk only when the store does not already hold what is needed and no other replica is
// fetching. The protocol: read the store; if it holds what is needed, serve it; else pass the gate
// (ban, shared back-off), take one unit of the budget, and take the lock; the holder re-reads,
// fetches, writes fenced and announces (fetchLocked); a replica that finds the lock taken waits for
// the holder's write and serves it, or takes the lock over if the holder lets go without writing.
func (b *Broker) refresh(ctx context.Context, e *entry, inv *invalidation) (token.Record, error) {
	spent := false
	for {
		if !b.sh.isUp() {
			return b.refreshAlone(ctx, e, inv)
		}
		rec, _, need, err := b.readStored(ctx, e, inv)
		if err != nil {
			return b.refreshAlone(ctx, e, inv)
		}
		if !need {
			return rec, nil
		}
		noted, err := b.gate(ctx, e)
		if err != nil {
			return token.Record{}, err
		}
		// Wait for the budget before taking the lock (a lock held while queueing for the budget
		// could lapse and let another replica make the same call), and only once per refresh,
		// however many times this replica then waits for another's write.
		if !spent {
			if err := b.spend(ctx); err != nil {
				return token.Record{}, err
			}
			spent = true
		}
		l, err := b.tryLock(ctx, e.key)
		if err != nil {
			return b.refreshAlone(ctx, e, inv)
		}
		if l == nil {
			// Another replica is fetching: wait for its write (pub/sub), re-reading the store now and then.
			if l, err = b.waitChange(ctx, e, rec.Generation, noted); err != nil {
				return token.Record{}, err
			}
		}
		if l != nil {
			// This replica holds the lock (taken now, or taken over from a holder that let go
			// without writing: it shut down, or its call was cut short).
			return b.fetchLocked(ctx, l, e, inv)
		}
	}
}

// readStored reads e's record from the store and serves it if newer. need is false when the store
// (or memory) already holds what the refresh wants, so no fetch is needed; rec is then the value to
// serve, the newest known (a failover that brought an older record back must not have it handed
// out). When need is true, rec is the stored record, whose generation fences the write.
func (b *Broker) readStored(ctx context.Context, e *entry, inv *invalidation) (rec token.Record, ok, need bool, err error) {
	rec, ok, err = b.sh.get(ctx, e.key)
	if err != nil {
		return rec, ok, false, err
	}
	if ok {
		b.adopt(e, rec)
		if cur := e.cur.Load(); cur != nil && cur.Value == rec.Value && cur.FirstSeen.Before(rec.FirstSeen) {
			// This replica saw the value first (the store lost the record, or another replica
			// restarted without it): the earliest first-seen wins, here and in the store.
			gen := rec.Generation
			rec = *cur
			rec.Generation = gen
			if cur, _, err := b.sh.put(ctx, e.key, gen, rec.Token); err == nil {
				b.adopt(e, cur)
			}
		}
	}
	best := rec
	if cur := e.cur.Load(); cur != nil && cur.Valid(b.now()) {
		best = *cur
	}
	need = b.needs(e, rec, ok, inv)
	if inv != nil {
		need = best.Value == inv.value && b.checkedLeft(ctx, e, inv.value) == 0
	}
	if !need {
		b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "shared").Inc()
		if best.Valid(b.now()) {
			b.clearFailure(e) // someone's fetch succeeded: whatever failed here before is over
		}
		return best, ok, false, nil
	}
	return rec, ok, true, nil
}

// needs reports whether the record (ok false: none) calls for a fetch from DingTalk. For a report,
// it does while the record holds the reported value and nobody checked that value with DingTalk
// within the cool-down (as this replica knows: readStored also asks the store). A report is answered
// by a check of the value, not by a generation counter, which restarts when the store restarts empty.
func (b *Broker) needs(e *entry, rec token.Record, ok bool, inv *invalidation) bool {
	if !ok {
		return true
	}
	now := b.now()
	if inv != nil {
		return rec.Value == inv.value && e.checkedLeft(inv.value, now) <= 0
	}
	if !rec.Valid(now) {
		return true
	}
	return !b.capped(e.key, rec.Token) && !now.Before(b.windowStart(rec.Token))
}

// effMargin is the refresh margin for t: the configured margin, capped at half t's lifetime.
func (b *Broker) effMargin(t token.Token) time.Duration {
	life := t.ExpiresAt.Sub(t.FetchedAt)
	if t.FetchedAt.IsZero() || life <= 0 {
		return b.margin
	}
	return min(b.margin, life/2)
}

func (b *Broker) windowStart(t token.Token) time.Time { return t.ExpiresAt.Add(-b.effMargin(t)) }

// capped reports whether t is a ticket at its 24 h limit: fetching again returns the same value
// without extending it, so it is only replaced once it has died.
func (b *Broker) capped(k token.Key, t token.Token) bool {
	return k.Kind == token.JSAPITicket && !t.ExpiresAt.Before(t.FirstSeen.Add(ticketMaxAge))
}

// fetchLocked runs with e's lock held (l): it re-reads the store (another replica may have written
// between our read and our lock), fetches, and writes fenced; the store announces the write.
func (b *Broker) fetchLocked(ctx context.Context, l *lease, e *entry, inv *invalidation) (token.Record, error) {
	defer l.release()
	rec, ok, need, err := b.readStored(ctx, e, inv)
	if err != nil {
		return b.refreshAlone(ctx, e, inv)
	}
	if !need {
		return rec, nil
	}
	if _, err := b.gate(ctx, e); err != nil {
		return token.Record{}, err
	}
	prev := rec.Token
	if !ok {
		prev = e.served()
	}
	t, err := b.fetch(ctx, e, prev)
	if err != nil {
		return b.fetchFailed(ctx, e, inv, err)
	}
	if inv != nil && t.Value == inv.value {
		b.markChecked(ctx, e, t.Value) // before the record: a waiter that sees it sees the note
	}
	cur, written, err := b.write(ctx, e.key, rec.Generation, t)
	if err != nil {
		cur = b.keepLocal(e, t)
	} else {
		b.adopt(e, cur)
		if !cur.Valid(b.now()) {
			// The store holds nothing this replica can serve and would not take t: serve t from
			// memory and write it back later rather than hand out nothing.
			cur = b.keepLocal(e, t)
		}
		if !written {
			b.log.Info("fenced write lost to a newer record", "app", e.key.App, "kind", e.key.Kind)
		}
	}
	b.succeeded(ctx, e, inv, t, prev)
	b.followTicket(e, inv, cur)
	return cur, nil
}

// write stores t fenced on generation gen, the one read before t was fetched. When the fenced write
// loses to a record that is not newer than t (the record vanished: Redis restarted empty, was
// flushed or evicted the key; or a failover brought an older record back), t is written again on top
// of what the store now holds: t was fetched after everything this replica read, and serving the
// loser would hand out an empty or older token. A record newer than t wins and is returned.
func (b *Broker) write(ctx context.Context, k token.Key, gen int64, t token.Token) (cur token.Record, written bool, err error) {
	for range 3 {
		cur, written, err = b.sh.put(ctx, k, gen, t)
		if err != nil || written || (cur.Valid(b.now()) && !cur.ExpiresAt.Before(t.ExpiresAt)) {
			return cur, written, err
		}
		b.log.Warn("store lost the record being refreshed: writing the fetched one again", "app", k.App, "kind", k.Kind,
			"expected_generation", gen, "found_generation", cur.Generation)
		gen = cur.Generation
	}
	return cur, false, nil
}

// refreshAlone refreshes e while the store is unreachable: this replica decides on its own, from
// memory, and the result is written back when the store returns.
func (b *Broker) refreshAlone(ctx context.Context, e *entry, inv *invalidation) (token.Record, error) {
	cur := e.cur.Load()
	var rec token.Record
	if cur != nil {
		rec = *cur
	}
	if !b.needs(e, rec, cur != nil, inv) {
		return rec, nil
	}
	if err := b.gateLocal(e); err != nil {
		return token.Record{}, err
	}
	if err := b.spend(ctx); err != nil {
		return token.Record{}, err
	}
	t, err := b.fetch(ctx, e, rec.Token)
	if err != nil {
		return b.fetchFailed(ctx, e, inv, err)
	}
	if inv != nil && t.Value == inv.value {
		b.markChecked(ctx, e, t.Value)
	}
	r := b.keepLocal(e, t)
	b.succeeded(ctx, e, inv, t, rec.Token)
	b.followTicket(e, inv, r)
	return r, nil
}

// fetchFailed answers a failed fetch: with another replica's value if one arrived meanwhile that
// makes the call moot (a fresh value, or for a report a different one: recording the failure would
// raise a false alarm and hold back the others), else with the failure, recorded.
func (b *Broker) fetchFailed(ctx context.Context, e *entry, inv *invalidation, err error) (token.Record, error) {
	if cur := e.cur.Load(); cur != nil && cur.Valid(b.now()) {
		if (inv != nil && cur.Value != inv.value) || (inv == nil && !b.needs(e, *cur, true, nil)) {
			return *cur, nil
		}
	}
	return token.Record{}, b.failed(ctx, e, err)
}

// waitChange waits until e's value changes past generation gen (another replica's write arriving by
// pub/sub) or the back-off note differs from noted, the one read before the lock was tried (the
// fetcher failed), re-reading the store every pollEvery in case the message was lost, for at most a
// lock's TTL. While it polls it also tries the lock: it returns a lease when the holder released it
// without writing anything and this replica now holds it.
func (b *Broker) waitChange(ctx context.Context, e *entry, gen int64, noted uint32) (*lease, error) {
	deadline := time.NewTimer(b.lockTTLFor(ctx, e.key))
	defer deadline.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, nil // the lock has lapsed by now: try to take it
		case <-e.changes():
			return nil, nil
		case <-poll.C:
			rec, ok, err := b.sh.get(ctx, e.key)
			if err != nil {
				return nil, nil // the loop falls back to refreshing alone
			}
			if ok && rec.Generation != gen {
				b.adopt(e, rec)
				return nil, nil
			}
			if !ok && gen != 0 {
				return nil, nil
			}
			// The fetcher failed: it wrote (or changed) the shared back-off note and released the
			// lock without writing a record. The loop's gate then answers the callers at once.
			if n, _, _ := b.sh.backoff(ctx, e.key); n.Write != noted {
				return nil, nil
			}
			if l, _ := b.sh.lock(ctx, e.key, b.lockTTLFor(ctx, e.key)); l != nil {
				b.m.locks.WithLabelValues("acquired").Inc() // the failed tries of a wait are not contention
				return l, nil
			}
		}
	}
}

// tryLock tries e's refresh lock, counting the outcome.
func (b *Broker) tryLock(ctx context.Context, k token.Key) (*lease, error) {
	l, err := b.sh.lock(ctx, k, b.lockTTLFor(ctx, k))
	switch {
	case err != nil:
		b.m.locks.WithLabelValues("error").Inc()
	case l != nil:
		b.m.locks.WithLabelValues("acquired").Inc()
	default:
		b.m.locks.WithLabelValues("contended").Inc()
	}
	return l, err
}

// lockTTLFor is how long k's refresh lock lives when taken with ctx: an access token's lapses a few
// seconds after one DingTalk call (as the contract says); a ticket's holder may first wait for the
// app's access token (a whole refresh) and then make the ticket call and a retry, so its lock lives
// as long as the refresh may run.
func (b *Broker) lockTTLFor(ctx context.Context, k token.Key) time.Duration {
	if d, ok := ctx.Deadline(); ok && k.Kind == token.JSAPITicket {
		return max(b.lockTTL, time.Until(d)+time.Second)
	}
	return b.lockTTL
}

// followTicket refreshes the app's ticket in the background when an invalidation replaced its token:
// whatever made DingTalk revoke the token may have revoked the ticket too.
func (b *Broker) followTicket(e *entry, inv *invalidation, got token.Record) {
	if inv == nil || e.key.Kind != token.AccessToken || got.Value == inv.value {
		return
	}
	te, err := b.entry(token.Key{App: e.key.App, Kind: token.JSAPITicket})
	if err != nil {
		return
	}
	if cur := te.cur.Load(); cur != nil {
		b.flight(te, &invalidation{value: cur.Value})
	}
}
