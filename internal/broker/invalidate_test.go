package broker_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

func TestInvalidateOldTokenReturnsCurrentWithoutUpstreamCall(t *testing.T) {
	up := newUpstream(2 * time.Hour)
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})
	cur, _ := b.Token(t.Context(), crm)
	got, err := b.Invalidate(t.Context(), "crm", "an-older-token")
	if err != nil || got.Value != cur.Value {
		t.Fatalf("got %q, %v; want the current token", got.Value, err)
	}
	if up.calls.Load() != 1 {
		t.Fatalf("upstream calls = %d, want 1 (only the first fetch)", up.calls.Load())
	}
}

func TestInvalidateCurrentTokenFetchesANewOne(t *testing.T) {
	up := newUpstream(2 * time.Hour)
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})
	cur, _ := b.Token(t.Context(), crm)
	up.revoke("crm") // DingTalk revoked it early
	got, err := b.Invalidate(t.Context(), "crm", cur.Value)
	if err != nil {
		t.Fatal(err)
	}
	if got.Value == cur.Value {
		t.Fatal("invalidate returned the revoked token")
	}
	if now, _ := b.Token(t.Context(), crm); now.Value != got.Value {
		t.Fatalf("Token after invalidate = %q, want %q", now.Value, got.Value)
	}
}

func TestInvalidateSameTokenBackIsKeptThenCoolDown(t *testing.T) {
	up := newUpstream(2 * time.Hour) // not revoked: DingTalk hands the same token back
	b := newBroker(t, store.NewMemory(store.MemoryOptions{}), up, broker.Options{})
	cur, _ := b.Token(t.Context(), crm)
	got, err := b.Invalidate(t.Context(), "crm", cur.Value)
	if err != nil || got.Value != cur.Value {
		t.Fatalf("got %q, %v; want the same token kept", got.Value, err)
	}
	_, err = b.Invalidate(t.Context(), "crm", cur.Value)
	var cd *broker.CooldownError
	if !errors.As(err, &cd) || cd.RetryAfter <= 0 || cd.RetryAfter > 30*time.Second {
		t.Fatalf("second report: err = %v, want CooldownError with 0 < RetryAfter <= 30s", err)
	}
	if up.calls.Load() != 2 {
		t.Fatalf("upstream calls = %d, want 2", up.calls.Load())
	}
}

func TestConcurrentInvalidationsAcrossReplicasCauseOneUpstreamCall(t *testing.T) {
	st := store.NewMemory(store.MemoryOptions{})
	testConcurrentInvalidations(t, st, st, st)
}

func testConcurrentInvalidations(t *testing.T, stores ...broker.Store) {
	up := newUpstream(2 * time.Hour)
	var bs []*broker.Broker
	for _, st := range stores {
		b := newBroker(t, st, up, broker.Options{})
		run(t, b)
		bs = append(bs, b)
	}
	for _, b := range bs {
		waitFor(t, "warm-up", 5*time.Second, b.Ready)
	}
	old, _ := bs[0].Token(t.Context(), crm)
	for _, b := range bs {
		if tok, _ := b.Token(t.Context(), crm); tok.Value != old.Value {
			t.Fatalf("replicas disagree before the test: %q vs %q", tok.Value, old.Value)
		}
	}
	before := up.calls.Load()
	up.revoke("crm")
	gate := up.hold()

	const n = 90
	got := make([]token.Token, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = bs[i%len(bs)].Invalidate(t.Context(), "crm", old.Value) })
	}
	<-up.entered
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("report %d: %v", i, errs[i])
		}
		if got[i].Value == old.Value || got[i].Value != got[0].Value {
			t.Fatalf("report %d got %q; want every reporter to get the one new token %q", i, got[i].Value, got[0].Value)
		}
	}
	if calls := up.calls.Load() - before; calls != 1 {
		t.Fatalf("upstream calls = %d, want 1", calls)
	}
	// The new token reaches every replica's memory (pub/sub) within a second.
	for i, b := range bs {
		waitFor(t, "new token on every replica", time.Second, func() bool {
			tok, _ := b.Token(t.Context(), crm)
			return tok.Value == got[0].Value
		})
		_ = i
	}
}
