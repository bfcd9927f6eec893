package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// TestCorpKeys checks that a third-party app's suite token and its corps' credentials are separate
// records, and that a corp's write is announced with its corp, on every store.
func TestCorpKeys(t *testing.T) {
	srv := redistest.Start(t)
	var p prefixes
	backends := map[string]func(t *testing.T) (broker.Store, broker.Store){
		"memory": func(t *testing.T) (broker.Store, broker.Store) {
			m := store.NewMemory(store.MemoryOptions{})
			return m, m
		},
		"miniredis": func(t *testing.T) (broker.Store, broker.Store) {
			opts := store.RedisOptions{URL: "redis://" + miniredis.RunT(t).Addr(), Prefix: "tokend"}
			return openRedis(t, opts), openRedis(t, opts)
		},
		"redis": func(t *testing.T) (broker.Store, broker.Store) {
			opts := store.RedisOptions{URL: srv.URL(), Prefix: p.next()}
			return openRedis(t, opts), openRedis(t, opts)
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			a, b := open(t)
			ctx := t.Context()
			suite := token.Key{App: "saas", Kind: token.AccessToken}
			corpA := token.Key{App: "saas", Kind: token.AccessToken, Corp: "dingcorpa"}
			corpB := token.Key{App: "saas", Kind: token.AccessToken, Corp: "dingcorpb"}
			ticketA := token.Key{App: "saas", Kind: token.JSAPITicket, Corp: "dingcorpa"}

			got := make(chan token.Key, 8)
			ready := make(chan struct{}, 8)
			sctx, cancel := context.WithCancel(ctx)
			go func() {
				_ = b.Subscribe(sctx, func() { ready <- struct{}{} }, func(k token.Key, _ token.Record) { got <- k })
			}()
			defer cancel()
			<-ready

			exp := time.Now().Add(time.Hour)
			for i, k := range []token.Key{suite, corpA, corpB, ticketA} {
				v := token.Token{Value: "v" + k.String(), ExpiresAt: exp, FetchedAt: time.Now()}
				if _, written, err := a.Put(ctx, k, 0, v); err != nil || !written {
					t.Fatalf("put %d %v: written %v, %v", i, k, written, err)
				}
				if k2 := <-got; k2 != k {
					t.Fatalf("announced %v, want %v", k2, k)
				}
			}
			for _, k := range []token.Key{suite, corpA, corpB, ticketA} {
				rec, ok, err := b.Get(ctx, k)
				if err != nil || !ok || rec.Value != "v"+k.String() || rec.Generation != 1 {
					t.Fatalf("get %v = %q gen %d, %v, %v", k, rec.Value, rec.Generation, ok, err)
				}
			}
			// One corp's lock is not another's, nor the suite token's.
			if ok, err := a.TryLock(ctx, corpA, "x", time.Minute); err != nil || !ok {
				t.Fatalf("lock corp a: %v %v", ok, err)
			}
			for _, k := range []token.Key{suite, corpB, ticketA} {
				if ok, err := b.TryLock(ctx, k, "y", time.Minute); err != nil || !ok {
					t.Fatalf("lock %v taken by corp a's: %v %v", k, ok, err)
				}
			}
		})
	}
}
