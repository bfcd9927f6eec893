package broker

import (
	"context"

	"github.com/tokend/tokend/internal/token"
)

// AppStatus is one app's credentials as /readyz shows them.
type AppStatus struct {
	App         App
	AccessToken Status
	// JSAPITicket is nil when the app keeps no ticket.
	JSAPITicket *Status
}

// Status returns every configured app's state, in configuration order.
func (b *Broker) Status() []AppStatus {
	entries := *b.entries.Load()
	apps := b.Apps()
	out := make([]AppStatus, 0, len(apps))
	for _, a := range apps {
		s := AppStatus{App: a}
		if e, ok := entries[token.Key{App: a.Name, Kind: token.AccessToken}]; ok {
			s.AccessToken = e.status()
		}
		if e, ok := entries[token.Key{App: a.Name, Kind: token.JSAPITicket}]; ok {
			st := e.status()
			s.JSAPITicket = &st
		}
		out = append(out, s)
	}
	return out
}

// Reload replaces the configured apps. Credentials of apps that stay keep their values (no refetch);
// new ones are fetched at once; removed ones are dropped. An app that was failing is retried at once
// (its credentials may be what changed), here and, through the shared back-off note, on every replica.
func (b *Broker) Reload(ctx context.Context, apps []App) {
	old := *b.entries.Load()
	added := b.setApps(apps, old)
	now := *b.entries.Load()
	for k, e := range old {
		if _, ok := now[k]; !ok {
			b.sched.remove(e)
			b.m.expiry.DeleteLabelValues(k.App, string(k.Kind))
			for _, st := range []State{StateOK, StateRefreshing, StateFailing} {
				b.m.state.DeleteLabelValues(k.App, string(k.Kind), string(st))
			}
			if _, stays := now[token.Key{App: k.App, Kind: token.AccessToken}]; !stays {
				b.m.forget(k.App) // the app is gone: its counters too
			}
		}
	}
	for k, e := range now {
		if _, ok := old[k]; !ok {
			continue
		}
		if !e.reset() {
			continue
		}
		if b.sh.isUp() {
			b.sh.clearBackoff(ctx, k)
		}
		b.sched.schedule(e, b.now())
	}
	for _, e := range added {
		b.sched.schedule(e, b.now())
	}
	b.log.Info("apps reloaded", "apps", len(apps), "added_credentials", len(added))
}
