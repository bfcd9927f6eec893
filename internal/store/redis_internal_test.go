package store

import (
	"context"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/token"
)

// TestSubscribeNoticesFrozenRedis: a subscription whose Redis stops answering (frozen, or a
// connection silently dropped) is noticed by its PING and re-established, with ready called again,
// instead of waiting forever on a dead connection.
func TestSubscribeNoticesFrozenRedis(t *testing.T) {
	srv := redistest.Start(t)
	s, err := OpenRedis(RedisOptions{URL: srv.URL(), OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.pingEvery = 100 * time.Millisecond

	ready := make(chan struct{}, 64)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Subscribe(ctx, func() { ready <- struct{}{} }, func(token.Key, token.Record) {})
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitReady := func(what string) {
		t.Helper()
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Fatalf("no ready %s within 10s", what)
		}
	}
	waitReady("at start")
	// A quiet but healthy connection is kept: its PINGs are answered, so no re-subscription.
	select {
	case <-ready:
		t.Fatal("ready called again on a healthy, quiet connection")
	case <-time.After(500 * time.Millisecond): // several ping periods of real time: the thing under test
	}

	srv.Freeze()
	// Real time must pass for the unanswered PING to be noticed: ping period plus op timeout, and then
	// some.
	time.Sleep(time.Second)
	srv.Thaw()
	waitReady("after the frozen connection was replaced")
}
