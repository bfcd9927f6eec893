package broker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

func corpEventName(app, corp string) string { return "corpevent:" + app + ":" + corp }

// corpEvent orders a corp's authorization and relief pushes: it reports whether the one pushed at
// at is newer than the last one kept, and keeps it. DingTalk repeats pushes for days, so a relief may
// arrive again after a later re-authorization. (Two different events for one corp arriving within
// the same moment on two replicas are not ordered; DingTalk pushes them minutes apart at least.)
func (b *Broker) corpEvent(ctx context.Context, app, corp string, at time.Time) (bool, error) {
	name := corpEventName(app, corp)
	v, ok, err := b.sh.noteErr(ctx, name)
	if err != nil {
		return false, err
	}
	if ok {
		if last, perr := strconv.ParseInt(v, 10, 64); perr == nil && last >= at.UnixMilli() {
			return false, nil
		}
	}
	return true, b.sh.setNoteErr(ctx, name, strconv.FormatInt(at.UnixMilli(), 10), corpEventKeep)
}

// CorpAuthorized takes in that corp authorized app at pushedAt (suite.Sink): the corp is added and
// its token fetched, unless a later relief is known. Errors only when the store cannot be reached.
func (b *Broker) CorpAuthorized(ctx context.Context, app, corp string, pushedAt time.Time) error {
	a, ok := b.appNamed(app)
	if !ok || a.ISV == nil || !dingtalk.ValidCorpID(corp) {
		return nil
	}
	newer, err := b.corpEvent(ctx, app, corp, pushedAt)
	if err != nil {
		return fmt.Errorf("corp authorized: %w", err)
	}
	if !newer {
		return nil
	}
	k := token.Key{App: app, Kind: token.AccessToken, Corp: corp}
	b.sh.clearBackoff(ctx, k) // no longer refused
	e, err := b.corpEntry(k)
	if err != nil {
		return nil
	}
	e.reset()
	b.sched.schedule(e, b.now())
	b.log.Info("corp authorized", "app", app, "corp", corp)
	return nil
}

// CorpRelieved takes in that corp withdrew its authorization of app at pushedAt (suite.Sink): unless
// a later authorization is known, its credentials are dropped on every replica (a record without a
// value announces it) and the corp is refused for upstream.failure_retry, then treated as DingTalk
// answers. Errors only when the store cannot be reached (the corp is dropped here all the same).
func (b *Broker) CorpRelieved(ctx context.Context, app, corp string, pushedAt time.Time) error {
	a, ok := b.appNamed(app)
	if !ok || a.ISV == nil || !dingtalk.ValidCorpID(corp) {
		return nil
	}
	newer, err := b.corpEvent(ctx, app, corp, pushedAt)
	if err != nil {
		b.dropCorp(app, corp)
		return fmt.Errorf("corp relieved: %w", err)
	}
	if !newer {
		return nil
	}
	tk := token.Key{App: app, Kind: token.AccessToken, Corp: corp}
	b.sh.setBackoff(ctx, tk, backoffNote{Class: dingtalk.ClassCorpNotAuthorized, Family: dingtalk.FamilyTransport,
		Code: codeRelieved}, b.failRetry)
	now := b.now()
	for _, kind := range []token.Kind{token.AccessToken, token.JSAPITicket} {
		k := token.Key{App: app, Kind: kind, Corp: corp}
		rec, _, err := b.sh.get(ctx, k)
		if err != nil {
			b.dropCorp(app, corp)
			return fmt.Errorf("corp relieved: %w", err)
		}
		if rec.Generation > 0 && rec.Value == "" {
			continue
		}
		exp := now.Add(b.failRetry)
		if rec.ExpiresAt.After(exp) {
			exp = rec.ExpiresAt // an expiry never moves backwards in the store
		}
		tomb := token.Token{ExpiresAt: exp, FetchedAt: now}
		if _, _, err := b.sh.put(ctx, k, rec.Generation, tomb); err != nil {
			b.dropCorp(app, corp)
			return fmt.Errorf("corp relieved: %w", err)
		}
	}
	b.dropCorp(app, corp)
	b.log.Info("corp relieved", "app", app, "corp", corp)
	return nil
}

// refreshCorpAlone is what a corp token's refresh does while the store cannot be used: replicas
// cannot agree, and a fetch by one kills the token the others serve. So no proactive refresh (a
// valid token is served as it is), no fetch for a report (the caller gets 503 rather than start a
// rotation war), and a fetch only for a waiting caller when this replica holds no valid token, at
// most once per failure_retry. The token fetched is written back when the store returns, unless the
// store then holds one fetched later.
func (b *Broker) refreshCorpAlone(ctx context.Context, e *entry, inv *invalidation, demanded bool) (token.Record, error) {
	now := b.now()
	cur := e.cur.Load()
	valid := cur != nil && cur.Valid(now)
	switch {
	case inv != nil && valid && cur.Value != inv.value:
		return *cur, nil
	case inv != nil:
		return token.Record{}, &UnavailableError{RetryAfter: b.failRetry, Code: codeStoreDown}
	case valid:
		return *cur, nil
	case !demanded:
		return token.Record{}, &UnavailableError{RetryAfter: time.Second, Code: codeStoreDown}
	}
	if last := e.aloneAt.Load(); last != 0 {
		if wait := time.UnixMilli(last).Add(b.failRetry).Sub(now); wait > 0 {
			return token.Record{}, &UnavailableError{RetryAfter: wait, Code: codeStoreDown}
		}
	}
	e.aloneAt.Store(now.UnixMilli())
	return b.refreshAlone(ctx, e, nil)
}
