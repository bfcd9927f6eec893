package broker

import (
	"context"
	"errors"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// fetch calls DingTalk for e's credential. prev is the value known before, to carry FirstSeen.
func (b *Broker) fetch(ctx context.Context, e *entry, prev token.Token) (token.Token, error) {
	app := e.appConfig()
	e.fetching()
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
			err := &fault{Family: dingtalk.FamilyTransport, Code: "stale_ticket", Class: dingtalk.ClassUnavailable,
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
