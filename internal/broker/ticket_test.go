package broker_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// ticketUpstream models DingTalk's ticket rules: one ticket per app, renewed by 2 h on each fetch
// while valid, dead 24 h after its creation (unless immortal), while expireIn always says 7200.
type ticketUpstream struct {
	now      func() time.Time
	immortal bool // the quirk tokend must survive: the same ticket handed back past 24 h

	mu          sync.Mutex
	token       string
	ticket      string
	created     time.Time
	expires     time.Time
	n           int
	ticketCalls int
	rejectToken string // ticket calls with this access token fail with 40014
}

func (u *ticketUpstream) AccessToken(context.Context, dingtalk.App) (dingtalk.Grant, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.token == "" {
		u.n++
		u.token = "at-" + strconv.Itoa(u.n)
	}
	return dingtalk.Grant{Value: u.token, ExpiresIn: 2 * time.Hour}, nil
}

func (u *ticketUpstream) JSAPITicket(_ context.Context, _ dingtalk.API, at string) (dingtalk.Grant, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ticketCalls++
	if at == u.rejectToken {
		return dingtalk.Grant{}, &dingtalk.Error{Family: dingtalk.FamilyLegacy, Status: 200, Code: "40014", Class: dingtalk.ClassInvalidToken}
	}
	now := u.now()
	dead := u.ticket == "" || !now.Before(u.expires) || (!u.immortal && !now.Before(u.created.Add(24*time.Hour)))
	if dead {
		u.n++
		u.ticket, u.created = "ticket-"+strconv.Itoa(u.n), now
	}
	u.expires = now.Add(2 * time.Hour)
	return dingtalk.Grant{Value: u.ticket, ExpiresIn: 2 * time.Hour}, nil
}

var crmTicket = token.Key{App: "crm", Kind: token.JSAPITicket}

func ticketBroker(t *testing.T, clk *clock, up *ticketUpstream) *broker.Broker {
	apps := apps("crm")
	apps[0].JSAPITicket = true
	return newBroker(t, store.NewMemory(store.MemoryOptions{Now: clk.Now}), up, broker.Options{Now: clk.Now, Apps: apps})
}

func TestTicketDiesTwentyFourHoursAfterFirstSeenWhateverExpireInSays(t *testing.T) {
	clk := newClock()
	up := &ticketUpstream{now: clk.Now}
	b := ticketBroker(t, clk, up)
	first, err := b.Token(t.Context(), crmTicket)
	if err != nil {
		t.Fatal(err)
	}
	born := clk.Now()
	// Keep fetching as the served ticket expires: DingTalk renews the same ticket by 2 h each time.
	for clk.Now().Before(born.Add(23 * time.Hour)) {
		cur, err := b.Token(t.Context(), crmTicket)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Value != first.Value {
			t.Fatalf("ticket changed to %q before 24 h", cur.Value)
		}
		if limit := born.Add(24 * time.Hour); cur.ExpiresAt.After(limit) {
			t.Fatalf("ticket served until %v, past first-seen + 24 h (%v)", cur.ExpiresAt, limit)
		}
		// Into the refresh window, where the scheduler would refresh it.
		clk.Add(cur.ExpiresAt.Sub(clk.Now()) - 5*time.Minute)
		if _, err := b.Refresh(t.Context(), crmTicket); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(born.Add(24 * time.Hour).Sub(clk.Now()))
	next, err := b.Token(t.Context(), crmTicket)
	if err != nil {
		t.Fatal(err)
	}
	if next.Value == first.Value {
		t.Fatal("the ticket was still served after first-seen + 24 h")
	}
}

func TestTicketReturnedPast24HoursIsNotServed(t *testing.T) {
	clk := newClock()
	up := &ticketUpstream{now: clk.Now, immortal: true}
	b := ticketBroker(t, clk, up)
	if _, err := b.Token(t.Context(), crmTicket); err != nil {
		t.Fatal(err)
	}
	for range 13 { // 13 renewals of 2 h: past 24 h
		clk.Add(2*time.Hour - time.Second)
		_, _ = up.JSAPITicket(t.Context(), dingtalk.V1, "renew")
	}
	clk.Add(time.Minute)
	tok, err := b.Token(t.Context(), crmTicket)
	var un *broker.UnavailableError
	if !errors.As(err, &un) {
		t.Fatalf("got %q, %v; want UnavailableError instead of a ticket past 24 h", tok.Value, err)
	}
}

func TestTicketCallWithRejectedTokenReplacesTokenAndRetriesOnce(t *testing.T) {
	clk := newClock()
	up := &ticketUpstream{now: clk.Now}
	b := ticketBroker(t, clk, up)
	at, err := b.Token(t.Context(), crm)
	if err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	up.rejectToken, up.token = at.Value, "" // DingTalk revoked the token
	up.mu.Unlock()
	if _, err := b.Token(t.Context(), crmTicket); err != nil {
		t.Fatalf("ticket: %v", err)
	}
	now, _ := b.Token(t.Context(), crm)
	if now.Value == at.Value {
		t.Fatal("the rejected access token is still served")
	}
	if up.ticketCalls != 2 {
		t.Fatalf("ticket calls = %d, want 2 (the rejected one and one retry)", up.ticketCalls)
	}
}
