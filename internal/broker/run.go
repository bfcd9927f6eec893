package broker

import (
	"context"
	"sync"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// Run refreshes credentials in the background until ctx ends: the start-up warm-up, the scheduler
// and its workers, the store subscription and the store monitor. When ctx ends it stops them, cuts
// refreshes in flight short (their locks are released, not left to lapse) and returns nil.
func (b *Broker) Run(ctx context.Context) error {
	work := make(chan *entry)
	var wg sync.WaitGroup
	for range b.workers {
		wg.Go(func() {
			for e := range work {
				<-b.flight(e, nil)
			}
		})
	}
	wg.Go(func() { b.subscribe(ctx) })
	wg.Go(func() { b.monitor(ctx) })
	wg.Go(func() { b.warmUp(ctx) })
	b.sched.run(ctx, work)
	b.stop()
	close(work)
	wg.Wait()
	b.lifeMu.Lock()
	b.stopped = true
	b.lifeMu.Unlock()
	b.inflight.Wait()
	return nil
}

// warmUp tries every credential once (access tokens before tickets, which need them), with at most
// Workers refreshes at a time, then marks the broker ready. Entries enter the scheduler as their first
// refresh ends.
func (b *Broker) warmUp(ctx context.Context) {
	var tokens, tickets []*entry
	for _, e := range *b.entries.Load() {
		if e.key.Kind == token.AccessToken {
			tokens = append(tokens, e)
		} else {
			tickets = append(tickets, e)
		}
	}
	sem := make(chan struct{}, b.workers)
	for _, batch := range [][]*entry{tokens, tickets} {
		var wg sync.WaitGroup
		for _, e := range batch {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				select {
				case <-b.flight(e, nil):
				case <-ctx.Done():
				}
			})
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return
	}
	b.warm.Store(true)
	b.log.Info("warm-up complete", "credentials", len(tokens)+len(tickets))
}

// reschedule queues e for its next refresh: when its value enters the refresh window (with jitter,
// so replicas do not all fire at once), or when its failure back-off ends.
func (b *Broker) reschedule(e *entry) {
	if _, ok := (*b.entries.Load())[e.key]; !ok {
		return // removed by a reload
	}
	now := b.now()
	failing, nextTry := e.retryAt()
	cur := e.cur.Load()
	var due time.Time
	switch {
	case failing && now.Before(nextTry):
		due = nextTry
	case cur == nil || !cur.Valid(now):
		due = now.Add(minGap)
	case b.capped(e.key, cur.Token):
		due = cur.ExpiresAt
	default:
		m := b.effMargin(cur.Token)
		due = cur.ExpiresAt.Add(-m).Add(jitter(m / 10))
	}
	if due.Before(now.Add(minGap)) {
		due = now.Add(minGap)
	}
	b.sched.schedule(e, due)
}

// subscribe keeps the store subscription open: other replicas' writes reach memory as they happen.
func (b *Broker) subscribe(ctx context.Context) {
	first := true
	ready := func() {
		if first {
			first = false // the warm-up reads everything anyway
			return
		}
		go b.resync(ctx)
	}
	onWrite := func(k token.Key, rec token.Record) {
		e, ok := (*b.entries.Load())[k]
		if !ok {
			return
		}
		if e.adopt(rec, b.now()) {
			b.adopted(e)
			b.reschedule(e)
		}
	}
	for ctx.Err() == nil {
		if err := b.sh.subscribe(ctx, ready, onWrite); err != nil && ctx.Err() == nil {
			b.log.Warn("store subscription ended", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// resync re-reads every credential from the store, after a gap in the subscription.
func (b *Broker) resync(ctx context.Context) {
	for _, e := range *b.entries.Load() {
		if ctx.Err() != nil {
			return
		}
		rec, ok, err := b.sh.get(ctx, e.key)
		if err != nil {
			return
		}
		if ok && e.adopt(rec, b.now()) {
			b.adopted(e)
			b.reschedule(e)
		}
	}
}

// monitor pings the store, and when it comes back writes back what was refreshed alone meanwhile and
// re-reads what other replicas wrote.
func (b *Broker) monitor(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if b.sh.isUp() && n%5 != 0 {
			continue
		}
		if back, err := b.sh.ping(ctx); err == nil && back {
			b.writeBack(ctx)
			b.resync(ctx)
		}
	}
}

// writeBack stores the values refreshed while the store was down, unless the store holds newer ones.
func (b *Broker) writeBack(ctx context.Context) {
	for _, e := range *b.entries.Load() {
		cur := e.dirtyValue()
		if cur == nil {
			continue
		}
		rec, ok, err := b.sh.get(ctx, e.key)
		if err != nil {
			return
		}
		if !ok || cur.ExpiresAt.After(rec.ExpiresAt) {
			if rec, _, err = b.sh.put(ctx, e.key, rec.Generation, cur.Token); err != nil {
				return
			}
		}
		b.adopt(e, rec)
		e.wroteBack(cur)
	}
}
