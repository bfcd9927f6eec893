package broker_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// benchUpstream issues a fresh two-hour token per call and counts the calls.
type benchUpstream struct{ calls atomic.Int64 }

func (u *benchUpstream) AccessToken(context.Context, dingtalk.App) (dingtalk.Grant, error) {
	n := u.calls.Add(1)
	return dingtalk.Grant{Value: "bench-at-" + strconv.FormatInt(n, 10), ExpiresIn: 2 * time.Hour}, nil
}

func (u *benchUpstream) JSAPITicket(context.Context, dingtalk.API, string) (dingtalk.Grant, error) {
	n := u.calls.Add(1)
	return dingtalk.Grant{Value: "bench-jt-" + strconv.FormatInt(n, 10), ExpiresIn: 2 * time.Hour}, nil
}

// countingStore counts the calls that reach the store, so the benchmark can show that a cache hit
// makes none. Methods it does not override are forwarded uncounted; none of them is on the read path.
type countingStore struct {
	broker.Store
	calls atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, k token.Key) (token.Record, bool, error) {
	s.calls.Add(1)
	return s.Store.Get(ctx, k)
}

func (s *countingStore) Put(ctx context.Context, k token.Key, gen int64, t token.Token) (token.Record, bool, error) {
	s.calls.Add(1)
	return s.Store.Put(ctx, k, gen, t)
}

func (s *countingStore) TryLock(ctx context.Context, k token.Key, owner string, ttl time.Duration) (bool, error) {
	s.calls.Add(1)
	return s.Store.TryLock(ctx, k, owner, ttl)
}

func (s *countingStore) Unlock(ctx context.Context, k token.Key, owner string) error {
	s.calls.Add(1)
	return s.Store.Unlock(ctx, k, owner)
}

func (s *countingStore) GetNote(ctx context.Context, name string) (string, time.Duration, bool, error) {
	s.calls.Add(1)
	return s.Store.GetNote(ctx, name)
}

func (s *countingStore) SetNote(ctx context.Context, name, value string, ttl time.Duration) error {
	s.calls.Add(1)
	return s.Store.SetNote(ctx, name, value, ttl)
}

// newBenchBroker builds a broker (not running: no background refreshes) for n apps named app0…,
// and makes the access token of app0 valid in memory.
func newBenchBroker(b *testing.B, n int) (*broker.Broker, *countingStore, *benchUpstream, token.Key) {
	b.Helper()
	apps := make([]broker.App, n)
	for i := range apps {
		name := "app" + strconv.Itoa(i)
		apps[i] = broker.App{Name: name, Cred: dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: name, Secret: "s-" + name}}
	}
	st := &countingStore{Store: store.NewMemory(store.MemoryOptions{})}
	up := &benchUpstream{}
	br, err := broker.New(broker.Options{Store: st, Upstream: up, Apps: apps})
	if err != nil {
		b.Fatal(err)
	}
	k := token.Key{App: "app0", Kind: token.AccessToken}
	if _, err := br.Refresh(b.Context(), k); err != nil {
		b.Fatal(err)
	}
	return br, st, up, k
}

// BenchmarkTokenHit is the broker's cache hit: Token for a credential valid in memory. It reports
// the store and upstream calls per hit, which must be zero.
func BenchmarkTokenHit(b *testing.B) {
	for _, n := range []int{1, 10000} {
		b.Run("apps="+strconv.Itoa(n), func(b *testing.B) {
			br, st, up, k := newBenchBroker(b, n)
			storeBefore, upBefore := st.calls.Load(), up.calls.Load()
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := br.Token(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
			reportCalls(b, st.calls.Load()-storeBefore, up.calls.Load()-upBefore)
		})
	}
}

// BenchmarkTokenHitParallel is BenchmarkTokenHit from every core at once.
func BenchmarkTokenHitParallel(b *testing.B) {
	br, st, up, k := newBenchBroker(b, 1)
	storeBefore, upBefore := st.calls.Load(), up.calls.Load()
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Token(ctx, k); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportCalls(b, st.calls.Load()-storeBefore, up.calls.Load()-upBefore)
}

func reportCalls(b *testing.B, storeCalls, upstreamCalls int64) {
	b.Helper()
	b.ReportMetric(float64(storeCalls)/float64(b.N), "store-calls/op")
	b.ReportMetric(float64(upstreamCalls)/float64(b.N), "upstream-calls/op")
	if storeCalls != 0 || upstreamCalls != 0 {
		b.Fatalf("cache hits made %d store and %d upstream calls, want none", storeCalls, upstreamCalls)
	}
}
