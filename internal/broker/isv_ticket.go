package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// fetchISV fetches a third-party app's suite token (k.Corp "") or a corp's token, with the newest
// suite ticket.
func (b *Broker) fetchISV(ctx context.Context, k token.Key, app App) (dingtalk.Grant, error) {
	if b.isv.suites == nil {
		return dingtalk.Grant{}, &fault{Family: dingtalk.FamilyTransport, Code: dingtalk.CodeBadRequest,
			Class: dingtalk.ClassBadRequest, Message: "no upstream for third-party apps"}
	}
	t, err := b.suiteTicket(ctx, app)
	if err != nil {
		return dingtalk.Grant{}, err
	}
	g, err := b.call(ctx, k, func(ctx context.Context) (dingtalk.Grant, error) {
		if k.Corp == "" {
			return b.isv.suites.SuiteAccessToken(ctx, app.ISV.Suite, t.Value)
		}
		return b.isv.suites.CorpAccessToken(ctx, app.ISV.Suite, t.Value, k.Corp)
	})
	var de *dingtalk.Error
	if errors.As(err, &de) && de.Class == dingtalk.ClassInvalidSuiteTicket && app.ISV.FixedTicket == "" {
		b.refuseTicket(ctx, app.Name, t)
	}
	return g, err
}

// suiteTicket returns the suite ticket to send for app: the fixed one of a custom app, or the newest
// pushed, as the store or (store down) this replica knows it. A newer one known here than in the
// store (the store restarted empty, or the push came while it was down) is written back. It fails
// with a ClassInvalidSuiteTicket fault, without any DingTalk call, when there is none or DingTalk
// already refused the newest.
func (b *Broker) suiteTicket(ctx context.Context, app App) (token.SuiteTicket, error) {
	if t := app.ISV.FixedTicket; t != "" {
		return token.SuiteTicket{Value: t}, nil
	}
	best := b.isv.knownTicket(app.Name)
	if b.sh.isUp() && b.isv.tickets != nil {
		st, ok, err := b.sh.suiteTicket(ctx, b.isv.tickets, app.Name)
		switch {
		case err != nil:
		case ok && st.PushedAt.After(best.PushedAt):
			best = st
			b.isv.learnTicket(app.Name, st)
		case best.Value != "" && (!ok || best.PushedAt.After(st.PushedAt)):
			_, _, _ = b.sh.putSuiteTicket(ctx, b.isv.tickets, app.Name, best)
		}
	}
	if best.Value == "" {
		return token.SuiteTicket{}, &fault{Family: dingtalk.FamilyTransport, Code: codeTicketMissing,
			Class: dingtalk.ClassInvalidSuiteTicket, Message: "no suite ticket pushed yet", local: true}
	}
	if b.ticketRefused(ctx, app.Name, best) {
		return token.SuiteTicket{}, &fault{Family: dingtalk.FamilyNew, Code: "InvalidSuiteTicket",
			Class: dingtalk.ClassInvalidSuiteTicket, Message: "DingTalk refused the newest suite ticket: waiting for a newer push", local: true}
	}
	return best, nil
}

func (s *isvState) knownTicket(app string) token.SuiteTicket {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return s.known[app]
}

// learnTicket keeps t if it is the newest known here, and reports whether it was.
func (s *isvState) learnTicket(app string, t token.SuiteTicket) bool {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if cur, ok := s.known[app]; ok && !cur.PushedAt.Before(t.PushedAt) {
		return false
	}
	s.known[app] = t
	return true
}

func refusedName(app string) string { return "badticket:" + app }

// refuseTicket remembers that DingTalk refused t, here and on every replica.
func (b *Broker) refuseTicket(ctx context.Context, app string, t token.SuiteTicket) {
	ms := t.PushedAt.UnixMilli()
	b.isv.tmu.Lock()
	b.isv.refused[app] = ms
	b.isv.tmu.Unlock()
	if b.sh.isUp() {
		b.sh.setNote(ctx, refusedName(app), strconv.FormatInt(ms, 10), refusedKeep)
	}
}

// ticketRefused reports whether DingTalk already refused t (as this replica or the store knows).
func (b *Broker) ticketRefused(ctx context.Context, app string, t token.SuiteTicket) bool {
	ms := t.PushedAt.UnixMilli()
	b.isv.tmu.Lock()
	local := b.isv.refused[app]
	b.isv.tmu.Unlock()
	if local == ms {
		return true
	}
	if b.sh.isUp() {
		if v, ok := b.sh.note(ctx, refusedName(app)); ok && v == strconv.FormatInt(ms, 10) {
			return true
		}
	}
	return false
}

// writeBackTickets stores the newest tickets this replica knows, after the store came back: pushes
// taken in while it was down, or tickets it lost. The store keeps the newest by push time, so this
// never replaces a newer one.
func (b *Broker) writeBackTickets(ctx context.Context) {
	if b.isv.tickets == nil {
		return
	}
	b.isv.tmu.Lock()
	known := make(map[string]token.SuiteTicket, len(b.isv.known))
	for app, t := range b.isv.known {
		known[app] = t
	}
	b.isv.tmu.Unlock()
	for app, t := range known {
		if _, _, err := b.sh.putSuiteTicket(ctx, b.isv.tickets, app, t); err != nil {
			return
		}
	}
}

// SuiteTicket takes in app's suite ticket pushed at pushedAt (suite.Sink; also the PUT of a client
// allowed suite_tickets). The newest by push time wins, here and in the store. It returns an error,
// without the ticket, when the store could not keep it (the ticket is still used here, and written
// back when the store returns): the pusher should repeat it. A ticket for an app that takes no pushed
// tickets is acknowledged and dropped.
func (b *Broker) SuiteTicket(ctx context.Context, app, ticket string, pushedAt time.Time) error {
	a, ok := b.appNamed(app)
	if !ok || a.ISV == nil || a.ISV.FixedTicket != "" || ticket == "" || b.isv.tickets == nil {
		return nil
	}
	t := token.SuiteTicket{Value: ticket, PushedAt: pushedAt}
	newer := b.isv.learnTicket(app, t)
	stored, written, err := b.sh.putSuiteTicket(ctx, b.isv.tickets, app, t)
	if err != nil {
		if newer {
			b.ticketArrived(ctx, app)
		}
		return fmt.Errorf("keep the suite ticket of %s: %w", app, err)
	}
	if !written && stored.PushedAt.After(t.PushedAt) {
		b.isv.learnTicket(app, stored)
	}
	if newer || written {
		b.ticketArrived(ctx, app)
	}
	return nil
}

// ticketArrived retries at once the app's credentials that wait for a suite ticket.
func (b *Broker) ticketArrived(ctx context.Context, app string) {
	entries := b.corpEntries(app)
	if e, ok := (*b.entries.Load())[token.Key{App: app, Kind: token.AccessToken}]; ok {
		entries = append(entries, e)
	}
	for _, e := range entries {
		if c, failing := e.failure(); !failing || c != dingtalk.ClassInvalidSuiteTicket {
			continue
		}
		e.reset()
		if b.sh.isUp() {
			b.sh.clearBackoff(ctx, e.key)
		}
		b.sched.schedule(e, b.now())
	}
}
