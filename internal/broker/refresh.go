package broker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
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
// DingTalk only when the store does not already hold what is needed and no other replica is fetching.
func (b *Broker) refresh(ctx context.Context, e *entry, inv *invalidation) (token.Record, error) {
	spent := false
	for {
		if !b.storeUp.Load() {
			return b.refreshAlone(ctx, e, inv)
		}
		rec, _, need, err := b.readStored(ctx, e, inv)
		if err != nil {
			return b.refreshAlone(ctx, e, inv)
		}
		if !need {
			return rec, nil
		}
		note, err := b.gate(ctx, e)
		if err != nil {
			return token.Record{}, err
		}
		// Wait for the budget before taking the lock: a lock held while queueing for the budget
		// could lapse and let another replica make the same call.
		// One unit per refresh, however many times this replica then waits for another's write.
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
		if l != nil {
			return b.fetchLocked(ctx, l, e, inv)
		}
		// Another replica is fetching: wait for its write (pub/sub), re-reading the store now and then.
		l, err = b.waitChange(ctx, e, rec.Generation, note)
		if err != nil {
			return token.Record{}, err
		}
		if l != nil {
			// The holder let go without writing (it shut down, or its call was cut short): this
			// replica took the lock over, with the call it already took from the budget.
			return b.fetchLocked(ctx, l, e, inv)
		}
	}
}

// superseded reports whether, while this replica's call was failing, another replica's value arrived
// that makes the call moot (a fresh value, or for an invalidation a different one). The failure is
// then not recorded: marking the credential failing, or writing a back-off note over the other
// replica's success, would raise a false alarm and hold back the others.
func (b *Broker) superseded(e *entry, inv *invalidation) (token.Record, bool) {
	cur := e.cur.Load()
	if cur == nil || !cur.Valid(b.now()) {
		return token.Record{}, false
	}
	if inv != nil {
		return *cur, cur.Value != inv.value
	}
	return *cur, !b.needs(e, *cur, true, nil)
}

// readStored reads e's record from the store and serves it if newer. need is false when the store
// already holds what the refresh wants (another replica's work), so no fetch is needed.
func (b *Broker) readStored(ctx context.Context, e *entry, inv *invalidation) (rec token.Record, ok, need bool, err error) {
	rec, ok, err = b.storeGet(ctx, e.key)
	if err != nil {
		return rec, ok, false, err
	}
	if ok {
		b.adopt(e, rec)
		if cur := e.cur.Load(); cur != nil && cur.Value == rec.Value && cur.FirstSeen.Before(rec.FirstSeen) {
			// This replica saw the value first (the store lost the record, or another replica
			// restarted without it): the earliest first-seen wins, here and in the store.
			stored := rec
			rec = *cur
			rec.Generation = stored.Generation
			b.writeFirstSeen(ctx, e, stored.Generation, rec.Token)
		}
	}
	// After adopt, the served value is the newest known of memory and store: a failover that brought
	// an older record back must not have it handed out.
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

// writeFirstSeen writes t, the stored value with the earliest first-seen known, over generation gen.
func (b *Broker) writeFirstSeen(ctx context.Context, e *entry, gen int64, t token.Token) {
	pctx, cancel := b.storeCtx(ctx)
	defer cancel()
	cur, _, err := b.store.Put(pctx, e.key, gen, t)
	if err != nil {
		b.storeFailed(err)
		return
	}
	b.adopt(e, cur)
}

// needs reports whether the record (ok false: none) calls for a fetch from DingTalk. For a report,
// it does while the record holds the reported value and nobody checked that value with DingTalk
// within the cool-down (as this replica knows: the store's note is read by readStored). A report is
// answered by a check of the value, not by a generation counter, which restarts when the store
// restarts empty.
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

// fetchLocked runs with e's store lock held: it re-reads the store (another replica may have written
// between our read and our lock), fetches, and writes fenced.
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
		if cur := e.cur.Load(); cur != nil {
			prev = cur.Token
		}
	}
	t, err := b.fetch(ctx, e, prev)
	if err != nil {
		if cur, ok := b.superseded(e, inv); ok {
			return cur, nil
		}
		return token.Record{}, b.failed(ctx, e, err)
	}
	if inv != nil && t.Value == inv.value {
		b.markChecked(ctx, e, t.Value)
	}
	cur, written, err := b.write(ctx, e.key, rec.Generation, t)
	if err != nil {
		return b.keepLocal(e, t), nil
	}
	b.adopt(e, cur)
	if !cur.Valid(b.now()) {
		// The store holds nothing this replica can serve and would not take t: serve t from memory
		// and write it back later rather than hand out nothing.
		cur = b.keepLocal(e, t)
	}
	b.succeeded(ctx, e, inv)
	b.onRefresh(RefreshEvent{Key: e.key, Result: "success", Fingerprint: token.Fingerprint(t.Value), Changed: t.Value != prev.Value, Invalidation: inv != nil})
	if !written {
		// A newer record won the fenced write: ours is dropped, theirs is served.
		b.log.Info("fenced write lost to a newer record", "app", e.key.App, "kind", e.key.Kind)
	}
	b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "success").Inc()
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
		pctx, cancel := b.storeCtx(ctx)
		cur, written, err = b.store.Put(pctx, k, gen, t)
		cancel()
		if err != nil {
			b.storeFailed(err)
			return cur, false, err
		}
		if written || (cur.Valid(b.now()) && !cur.ExpiresAt.Before(t.ExpiresAt)) {
			return cur, written, nil
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
		if cur, ok := b.superseded(e, inv); ok {
			return cur, nil
		}
		return token.Record{}, b.failed(ctx, e, err)
	}
	if inv != nil && t.Value == inv.value {
		b.markChecked(ctx, e, t.Value)
	}
	r := b.keepLocal(e, t)
	b.succeeded(ctx, e, inv)
	b.onRefresh(RefreshEvent{Key: e.key, Result: "success", Fingerprint: token.Fingerprint(t.Value), Changed: t.Value != rec.Value, Invalidation: inv != nil})
	b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "success").Inc()
	b.followTicket(e, inv, r)
	return r, nil
}

// keepLocal serves t from memory and marks it for writing back to the store.
func (b *Broker) keepLocal(e *entry, t token.Token) token.Record {
	e.mu.Lock()
	// One past the generation known: t was fetched after it, so a record of that generation is
	// older (the fence in the store uses the store's generation, never this one).
	gen := int64(1)
	if cur := e.cur.Load(); cur != nil {
		gen = cur.Generation + 1
	}
	r := token.Record{Token: t, Generation: gen}
	e.adoptLocked(r, b.now())
	e.dirty = true
	e.mu.Unlock()
	b.adopted(e)
	return r
}

// fetch calls DingTalk for e's credential. prev is the value known before, to carry FirstSeen.
func (b *Broker) fetch(ctx context.Context, e *entry, prev token.Token) (token.Token, error) {
	app := e.appConfig()
	e.mu.Lock()
	if e.lastErr == nil {
		e.state = StateRefreshing
	}
	e.mu.Unlock()

	var (
		g     dingtalk.Grant
		err   error
		start = b.now()
	)
	switch e.key.Kind {
	case token.AccessToken:
		g, err = b.call(ctx, e.key, func(ctx context.Context) (dingtalk.Grant, error) {
			return b.upstream.AccessToken(ctx, app.Cred)
		})
	case token.JSAPITicket:
		g, err = b.fetchTicket(ctx, app)
	}
	if err != nil {
		return token.Token{}, err
	}
	t := token.Token{Value: g.Value, FetchedAt: start, FirstSeen: start, ExpiresAt: start.Add(g.ExpiresIn)}
	for _, known := range []token.Token{prev, e.served()} {
		// The earliest first-seen of the value, whoever saw it.
		if known.Value == g.Value && !known.FirstSeen.IsZero() && known.FirstSeen.Before(t.FirstSeen) {
			t.FirstSeen = known.FirstSeen
		}
	}
	if e.key.Kind == token.JSAPITicket {
		if limit := t.FirstSeen.Add(ticketMaxAge); t.ExpiresAt.After(limit) {
			t.ExpiresAt = limit
		}
		if !t.ExpiresAt.After(b.now()) {
			// DingTalk handed back a ticket first seen 24 h ago: dead by the documented rule, whatever
			// expireIn says. Serving it would fail the front-ends; retrying soon gets a new one.
			err := &dingtalk.Error{Family: dingtalk.FamilyTransport, Code: "stale_ticket", Class: dingtalk.ClassUnavailable,
				Message: "ticket older than 24 h returned"}
			b.m.upstream.WithLabelValues(e.key.App, string(e.key.Kind), err.Code).Inc()
			return token.Token{}, err
		}
	}
	return t, nil
}

// fetchTicket gets a ticket with the app's current access token. If DingTalk says that token is
// invalid, the token is replaced (as if a client had reported it) and the ticket call tried once more.
func (b *Broker) fetchTicket(ctx context.Context, app App) (dingtalk.Grant, error) {
	api := app.Cred.API
	if app.Cred.Type == dingtalk.Corp {
		api = dingtalk.Legacy
	}
	k := token.Key{App: app.Name, Kind: token.JSAPITicket}
	tokenKey := token.Key{App: app.Name, Kind: token.AccessToken}
	for attempt := 0; ; attempt++ {
		at, err := b.Token(ctx, tokenKey)
		if err != nil {
			return dingtalk.Grant{}, &noCallError{err}
		}
		g, err := b.call(ctx, k, func(ctx context.Context) (dingtalk.Grant, error) {
			return b.upstream.JSAPITicket(ctx, api, at.Value)
		})
		var de *dingtalk.Error
		if attempt > 0 || !errors.As(err, &de) || de.Class != dingtalk.ClassInvalidToken {
			return g, err
		}
		te, eerr := b.entry(tokenKey)
		if eerr != nil {
			return g, err
		}
		cur := te.cur.Load()
		if cur == nil || cur.Value != at.Value {
			continue // already replaced meanwhile
		}
		if _, ierr := b.await(ctx, te, &invalidation{value: at.Value}); ierr != nil {
			return g, &noCallError{ierr}
		}
		if err := b.spend(ctx); err != nil { // the second ticket call
			return dingtalk.Grant{}, err
		}
	}
}

// noCallError is a ticket refresh's failure to get the app's access token: no ticket call was made.
type noCallError struct{ err error }

func (e *noCallError) Error() string { return "access token for the ticket call: " + e.err.Error() }
func (e *noCallError) Unwrap() error { return e.err }

// call makes one DingTalk call within the upstream timeout and records it. The caller has taken the
// call from the rate budget (see spend).
func (b *Broker) call(ctx context.Context, k token.Key, do func(context.Context) (dingtalk.Grant, error)) (dingtalk.Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, b.upTimeout)
	defer cancel()
	start := time.Now()
	g, err := do(ctx)
	b.m.upstreamDur.WithLabelValues(string(k.Kind)).Observe(time.Since(start).Seconds())
	b.m.upstream.WithLabelValues(k.App, string(k.Kind), codeLabel(err)).Inc()
	return g, err
}

// failure is the shared back-off state of one credential, kept as a store note so that every replica
// obeys one schedule.
// The note lives keepMs past the end of the wait, so that the attempt count outlives it: the wait
// left is the note's time to live (by the store's clock) minus keepMs. It carries no instant of any
// replica's clock, so a replica whose clock is off cannot stall the others.
type failure struct {
	Class    dingtalk.Class  `json:"class"`
	Family   dingtalk.Family `json:"family"`
	Status   int             `json:"status,omitempty"`
	Code     string          `json:"code"`
	Attempts int             `json:"attempts"`
	KeepMs   int64           `json:"keep_ms"`
	// Write tells one write from the next, so that a replica waiting on the lock sees a failure
	// noted even when it repeats the previous one.
	Write uint32 `json:"write"`
}

// backoffKeep is how long a back-off note outlives its wait.
const backoffKeep = 10 * time.Minute

func backoffNote(k token.Key) string { return "backoff:" + k.App + ":" + string(k.Kind) }

const banNote = "ipban"

// cooldownNote names the note that says k's value was just checked with DingTalk and came back
// unchanged (by its fingerprint, never the value).
func cooldownNote(k token.Key, value string) string {
	return "cooldown:" + k.App + ":" + string(k.Kind) + ":" + token.Fingerprint(value)
}

// markChecked records that value, reported invalid, was just checked with DingTalk and came back
// unchanged: further reports of that same value within the cool-down get 429, and a replica waiting
// to check it finds it checked. The note is written before the record, so a waiter that sees the
// record sees the note too.
func (b *Broker) markChecked(ctx context.Context, e *entry, value string) {
	e.markChecked(value, b.now().Add(cooldown))
	if !b.storeUp.Load() {
		return
	}
	sctx, cancel := b.storeCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := b.store.SetNote(sctx, cooldownNote(e.key, value), "1", cooldown); err != nil {
		b.storeFailed(err)
	}
}

// checkedLeft is how long reports of value must still wait: what is left of the cool-down of its
// last check, as this replica or the store knows it (0: not checked lately).
func (b *Broker) checkedLeft(ctx context.Context, e *entry, value string) time.Duration {
	left := e.checkedLeft(value, b.now())
	if b.storeUp.Load() {
		sctx, cancel := b.storeCtx(ctx)
		_, ttl, ok, err := b.store.GetNote(sctx, cooldownNote(e.key, value))
		cancel()
		if err != nil {
			b.storeFailed(err)
		} else if ok && ttl > left {
			left = ttl
		}
	}
	return max(left, 0)
}

// failed records a failed fetch (locally and in the store) and returns the error for the callers.
func (b *Broker) failed(ctx context.Context, e *entry, err error) error {
	if ctx.Err() != nil {
		// The refresh was cut short on this side (shutdown, or its own deadline): DingTalk said
		// nothing, so nothing is recorded, here or in the store. A replica waiting on the lock
		// (released on the way out) takes the refresh over instead of obeying a false back-off.
		return &UnavailableError{RetryAfter: time.Second}
	}
	var (
		de *dingtalk.Error
		nc *noCallError
	)
	if errors.As(err, &nc) {
		// The ticket's access token could not be had: no ticket call was made, and the token's entry
		// recorded its own failure. The ticket's callers get the token's error.
		b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "failure").Inc()
		return nc.err
	}
	if !errors.As(err, &de) {
		// Not DingTalk's answer.
		b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "failure").Inc()
		return err
	}
	now := b.now()
	e.mu.Lock()
	e.lastErr = de
	e.state = StateFailing
	var remaining time.Duration
	if cur := e.cur.Load(); cur != nil {
		remaining = cur.ExpiresAt.Sub(now)
	}
	switch {
	case de.Class == dingtalk.ClassBanned:
		until := now.Add(banPause)
		b.banUntil.Store(until.UnixMilli())
		e.nextTry = until.Add(jitter(10 * time.Second))
		e.attempts = 0
	case !de.Retryable():
		e.nextTry = now.Add(b.failRetry)
		e.attempts = 0
	default:
		e.attempts++
		e.nextTry = now.Add(backoff(e.attempts, de.Class, remaining))
	}
	e.noted = true
	f := failure{Class: de.Class, Family: de.Family, Status: de.Status, Code: de.Code, Attempts: e.attempts, KeepMs: backoffKeep.Milliseconds(), Write: rand.Uint32()}
	wait := e.nextTry.Sub(now)
	e.mu.Unlock()

	b.m.refresh.WithLabelValues(e.key.App, string(e.key.Kind), "failure").Inc()
	b.setState(e)
	b.onRefresh(RefreshEvent{Key: e.key, Result: "failure", UpstreamCode: de.Code})
	level := slog.LevelWarn
	if !de.Retryable() || de.Class == dingtalk.ClassBanned {
		level = slog.LevelError
	}
	b.log.Log(ctx, level, "refresh failed",
		"app", e.key.App, "kind", e.key.Kind, "upstream_code", de.Code, "family", de.Family,
		"retryable", de.Retryable(), "retry_in", wait.Round(time.Millisecond).String(), "detail", de.Message)

	if b.storeUp.Load() {
		raw, _ := json.Marshal(f)
		sctx, cancel := b.storeCtx(context.WithoutCancel(ctx))
		defer cancel()
		if err := b.store.SetNote(sctx, backoffNote(e.key), string(raw), wait+backoffKeep); err != nil {
			b.storeFailed(err)
		}
		if de.Class == dingtalk.ClassBanned {
			// The ban's end is the note's expiry, by the store's clock.
			if err := b.store.SetNote(sctx, banNote, de.Code, banPause); err != nil {
				b.storeFailed(err)
			}
		}
	}
	return b.failureError(de, wait)
}

func (b *Broker) failureError(de *dingtalk.Error, wait time.Duration) error {
	if !de.Retryable() {
		return &RejectedError{Upstream: de}
	}
	return &UnavailableError{RetryAfter: wait, Upstream: de}
}

// succeeded clears e's failure state, here and in the store, and starts an invalidation's cool-down.
func (b *Broker) succeeded(ctx context.Context, e *entry, inv *invalidation) {
	e.mu.Lock()
	hadFailure := e.lastErr != nil || e.attempts > 0
	noted := e.noted
	e.noted = false
	e.lastErr, e.attempts, e.nextTry = nil, 0, time.Time{}
	e.state = StateOK
	e.mu.Unlock()
	b.setState(e)
	if hadFailure {
		b.log.Info("refresh recovered", "app", e.key.App, "kind", e.key.Kind)
	}
	if !b.storeUp.Load() {
		return
	}
	sctx, cancel := b.storeCtx(context.WithoutCancel(ctx))
	defer cancel()
	if noted || hadFailure {
		if err := b.store.SetNote(sctx, backoffNote(e.key), "", 0); err != nil {
			b.storeFailed(err)
		}
	}
}

// gate returns an error instead of letting a fetch happen while DingTalk bans this IP or the shared
// back-off of e says to wait. note is the back-off note as read ("" for none).
func (b *Broker) gate(ctx context.Context, e *entry) (note string, err error) {
	if err := b.gateLocal(e); err != nil {
		return "", err
	}
	now := b.now()
	sctx, cancel := b.storeCtx(ctx)
	defer cancel()
	if _, left, ok, err := b.store.GetNote(sctx, banNote); err != nil {
		b.storeFailed(err)
	} else if ok && left > 0 {
		// Another replica was banned: this one shares the IP, so it waits the ban out too.
		until := now.Add(left)
		b.banUntil.Store(until.UnixMilli())
		return "", b.waitBan(e, until, now)
	}
	v, ttl, ok, err := b.store.GetNote(sctx, backoffNote(e.key))
	if err != nil {
		b.storeFailed(err)
		return "", nil
	}
	if !ok || v == "" {
		return "", nil
	}
	e.mu.Lock()
	e.noted = true
	e.mu.Unlock()
	var f failure
	if json.Unmarshal([]byte(v), &f) != nil {
		return v, nil
	}
	next := now.Add(ttl - time.Duration(f.KeepMs)*time.Millisecond)
	de := &dingtalk.Error{Family: f.Family, Status: f.Status, Code: f.Code, Class: f.Class, Message: "reported by another replica"}
	e.mu.Lock()
	// Learn the shared schedule, so this replica's clients and scheduler obey it too.
	if f.Attempts > e.attempts {
		e.attempts = f.Attempts
	}
	if now.Before(next) {
		e.lastErr, e.nextTry, e.state = de, next, StateFailing
	}
	e.mu.Unlock()
	if !now.Before(next) {
		return v, nil
	}
	b.setState(e)
	return v, b.failureError(de, next.Sub(now))
}

// gateLocal is gate without the store: this replica's own view of a ban and of e's back-off.
func (b *Broker) gateLocal(e *entry) error {
	now := b.now()
	if until := time.UnixMilli(b.banUntil.Load()); now.Before(until) {
		return b.waitBan(e, until, now)
	}
	return e.blocked(now)
}

// waitBan puts e on hold until the IP ban ends (plus jitter, so the entries do not all resume at
// once) and returns the error its callers get meanwhile.
func (b *Broker) waitBan(e *entry, until, now time.Time) error {
	e.mu.Lock()
	e.lastErr, e.state = banError(), StateFailing
	if e.nextTry.Before(until) {
		e.nextTry = until.Add(jitter(10 * time.Second))
	}
	e.mu.Unlock()
	b.setState(e)
	return &UnavailableError{RetryAfter: until.Sub(now), Upstream: banError()}
}

func banError() *dingtalk.Error {
	return &dingtalk.Error{Family: dingtalk.FamilyTransport, Code: "ip_ban", Class: dingtalk.ClassBanned, Message: "egress IP blocked by DingTalk"}
}

// backoff is the wait before retry number attempts after a retryable failure: exponential from 1 s,
// with jitter, capped at a quarter of the time the served token has left (between 1 s and 60 s; 10 s
// when there is no valid token), so that a short outage inside the margin is retried often enough
// to never cost a client an error.
func backoff(attempts int, class dingtalk.Class, remaining time.Duration) time.Duration {
	limit := 10 * time.Second
	if remaining > 0 {
		limit = min(max(remaining/4, time.Second), time.Minute)
	}
	d := time.Second << min(attempts-1, 10)
	d = min(d, limit)
	d = d/2 + jitter(d/2)
	if class == dingtalk.ClassRateLimited && d < time.Second {
		d = time.Second
	}
	return d
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// waitChange waits until e's value changes past generation gen (another replica's write arriving by
// pub/sub) or the back-off note differs from note, the value read before the lock was tried (the
// fetcher failed), re-reading the store every pollEvery in case the message was lost, for at most a
// lock's TTL. While it polls it also tries the lock: it returns a lease when the holder released it
// without writing anything and this replica now holds it.
func (b *Broker) waitChange(ctx context.Context, e *entry, gen int64, note string) (*lease, error) {
	deadline := time.NewTimer(b.lockTTL)
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
			rec, ok, err := b.storeGet(ctx, e.key)
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
			if b.noteValue(ctx, backoffNote(e.key)) != note {
				return nil, nil
			}
			if l := b.pollLock(ctx, e.key); l != nil {
				return l, nil
			}
		}
	}
}

// pollLock tries e's lock while waiting for its holder, counting only a success (the failed tries
// of a wait are not contention worth a metric each).
func (b *Broker) pollLock(ctx context.Context, k token.Key) *lease {
	l, _ := b.lock(ctx, k, b.lockTTLFor(ctx, k))
	if l != nil {
		b.m.locks.WithLabelValues("acquired").Inc()
	}
	return l
}

// noteValue returns the store note called name, "" when there is none or the store fails.
func (b *Broker) noteValue(ctx context.Context, name string) string {
	sctx, cancel := b.storeCtx(ctx)
	defer cancel()
	v, _, _, err := b.store.GetNote(sctx, name)
	if err != nil {
		b.storeFailed(err)
	}
	return v
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
	cur := te.cur.Load()
	if cur == nil {
		return
	}
	b.flight(te, &invalidation{value: cur.Value})
}

// storeCtx bounds a group of store operations. The store bounds each operation itself too; this
// keeps the broker's promise on any store.
func (b *Broker) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.storeTimeout)
}

func (b *Broker) storeGet(ctx context.Context, k token.Key) (token.Record, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.storeTimeout)
	defer cancel()
	rec, ok, err := b.store.Get(ctx, k)
	if err != nil {
		b.storeFailed(err)
	} else {
		b.storeOK()
	}
	return rec, ok, err
}

func (b *Broker) tryLock(ctx context.Context, k token.Key) (*lease, error) {
	l, err := b.lock(ctx, k, b.lockTTLFor(ctx, k))
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
	b.m.expiry.WithLabelValues(e.key.App, string(e.key.Kind)).Set(float64(cur.ExpiresAt.UnixMilli()) / 1000)
	if cur.Valid(b.now()) {
		b.clearFailure(e) // another replica's success ends this one's failure state too
	}
}

// clearFailure puts e back in the ok state.
func (b *Broker) clearFailure(e *entry) {
	e.mu.Lock()
	changed := e.state != StateOK || e.lastErr != nil
	e.lastErr, e.attempts, e.nextTry = nil, 0, time.Time{}
	e.state = StateOK
	e.mu.Unlock()
	if changed {
		b.setState(e)
	}
}

// budgetNote names the upstream call budget all replicas share in the store.
const budgetNote = "upstream"

// spend takes one DingTalk call from the budgets: this replica's token bucket, then the one all
// replicas share.
func (b *Broker) spend(ctx context.Context) error {
	if err := b.budget.wait(ctx); err != nil {
		return err
	}
	return b.spendShared(ctx)
}

// spendShared takes one call from the budget shared by every replica (max_rps per second in all),
// waiting while it is spent. Without the store, the local budget alone paces this replica.
func (b *Broker) spendShared(ctx context.Context) error {
	limit := max(1, int(math.Ceil(b.maxRPS)))
	for b.storeUp.Load() {
		sctx, cancel := b.storeCtx(ctx)
		wait, err := b.store.Spend(sctx, budgetNote, limit, time.Second)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.storeFailed(err)
			return nil
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
