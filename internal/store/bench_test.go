package store_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// benchStores returns the stores the benchmarks compare: the in-memory one and a real redis-server
// on loopback (skipped, like the real-Redis tests, when redis-server is not installed).
func benchStores(b *testing.B) []struct {
	name string
	open func(b *testing.B) broker.Store
} {
	return []struct {
		name string
		open func(b *testing.B) broker.Store
	}{
		{"memory", func(*testing.B) broker.Store { return store.NewMemory(store.MemoryOptions{}) }},
		{"redis", func(b *testing.B) broker.Store {
			srv := redistest.Start(b)
			s, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		}},
	}
}

// BenchmarkPut is the store's compare-and-set, the write every refresh ends with: the generation
// check, the never-backwards expiry check, the write and its announcement, in one step (one Lua
// script round trip on Redis). "won" writes at the current generation, as a refresh holding the lock
// does; "fenced" writes at a stale generation, as a replica that lost its lock does, and is refused.
func BenchmarkPut(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name+"/won", func(b *testing.B) {
			s := st.open(b)
			k := token.Key{App: "crm", Kind: token.AccessToken}
			t0 := time.Now().Truncate(time.Millisecond)
			var gen int64
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				at := t0.Add(time.Duration(i) * time.Millisecond)
				tk := token.Token{Value: "bench-token-value", ExpiresAt: at.Add(2 * time.Hour), FirstSeen: at, FetchedAt: at}
				rec, written, err := s.Put(b.Context(), k, gen, tk)
				if err != nil || !written {
					b.Fatalf("put at generation %d: written %v, err %v", gen, written, err)
				}
				gen = rec.Generation
			}
		})
		b.Run(st.name+"/fenced", func(b *testing.B) {
			s := st.open(b)
			k := token.Key{App: "crm", Kind: token.AccessToken}
			at := time.Now().Truncate(time.Millisecond)
			tk := token.Token{Value: "current", ExpiresAt: at.Add(2 * time.Hour), FirstSeen: at, FetchedAt: at}
			if _, _, err := s.Put(b.Context(), k, 0, tk); err != nil {
				b.Fatal(err)
			}
			stale := token.Token{Value: "late", ExpiresAt: at.Add(3 * time.Hour), FirstSeen: at, FetchedAt: at}
			b.ReportAllocs()
			for b.Loop() {
				_, written, err := s.Put(b.Context(), k, 0, stale)
				if err != nil || written {
					b.Fatalf("stale put: written %v, err %v", written, err)
				}
			}
		})
	}
}

// BenchmarkPutParallel is BenchmarkPut "won" from many goroutines on distinct keys, as a replica's
// refresh workers do: it shows how far the store's connection pool carries concurrent refreshes.
func BenchmarkPutParallel(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			var next atomic.Int64
			t0 := time.Now().Truncate(time.Millisecond)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				k := token.Key{App: "app" + strconv.FormatInt(next.Add(1), 10), Kind: token.AccessToken}
				var gen int64
				for i := 0; pb.Next(); i++ {
					at := t0.Add(time.Duration(i) * time.Millisecond)
					tk := token.Token{Value: "v", ExpiresAt: at.Add(2 * time.Hour), FirstSeen: at, FetchedAt: at}
					rec, written, err := s.Put(b.Context(), k, gen, tk)
					if err != nil || !written {
						b.Errorf("put at generation %d: written %v, err %v", gen, written, err)
						return
					}
					gen = rec.Generation
				}
			})
		})
	}
}

// BenchmarkSpend is one take from the shared upstream budget, which every DingTalk call pays first.
// The limit is high enough that every take succeeds.
func BenchmarkSpend(b *testing.B) {
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			b.ReportAllocs()
			for b.Loop() {
				wait, err := s.Spend(b.Context(), "upstream", 1<<30, time.Second)
				if err != nil || wait != 0 {
					b.Fatalf("spend: wait %v, err %v", wait, err)
				}
			}
		})
	}
}
