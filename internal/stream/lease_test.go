package stream_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/stream"
)

var (
	_ stream.Leases = (*store.Memory)(nil)
	_ stream.Leases = (*store.Redis)(nil)
)

func TestLeaseHandle(t *testing.T) {
	m := store.NewMemory(store.MemoryOptions{})
	ctx := t.Context()
	a, err := stream.Obtain(ctx, m, "stream:saas", time.Minute)
	if err != nil || a == nil {
		t.Fatalf("Obtain = %v, %v", a, err)
	}
	if b, err := stream.Obtain(ctx, m, "stream:saas", time.Minute); err != nil || b != nil {
		t.Fatalf("a second Obtain = %v, %v; want nil, nil", b, err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := stream.Obtain(ctx, m, "stream:saas", time.Minute)
	if err != nil || b == nil {
		t.Fatalf("Obtain after Release = %v, %v", b, err)
	}
	if err := a.Renew(ctx); !errors.Is(err, stream.ErrLost) {
		t.Fatalf("Renew of a lease another holds = %v, want ErrLost", err)
	}
}

// flaky wraps a store's leases: while broken, every call fails as an unreachable store would. It
// counts attempts.
type flaky struct {
	stream.Leases
	broken   atomic.Bool
	attempts atomic.Int64
}

func (f *flaky) TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	f.attempts.Add(1)
	if f.broken.Load() {
		return false, errors.New("store unreachable")
	}
	return f.Leases.TryLease(ctx, name, owner, ttl)
}

func (f *flaky) ReleaseLease(ctx context.Context, name, owner string) error {
	if f.broken.Load() {
		return errors.New("store unreachable")
	}
	return f.Leases.ReleaseLease(ctx, name, owner)
}

// replicas runs RunLeader on n replicas, each with its own Redis client, and tracks who leads.
type replicas struct {
	t       *testing.T
	leases  []*flaky
	cancel  []context.CancelFunc
	done    []chan struct{}
	mu      sync.Mutex
	leading map[int]bool
	max     int
	changed chan struct{}
}

func startReplicas(t *testing.T, srv *redistest.Server, n int, ttl time.Duration, lead func(ctx context.Context, i int)) *replicas {
	r := &replicas{t: t, leading: map[int]bool{}, changed: make(chan struct{})}
	for i := range n {
		st, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "lease"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f := &flaky{Leases: st}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		r.leases, r.cancel, r.done = append(r.leases, f), append(r.cancel, cancel), append(r.done, done)
		go func() {
			defer close(done)
			stream.RunLeader(ctx, stream.LeaderOptions{Leases: f, Name: "stream:saas", TTL: ttl}, func(ctx context.Context) {
				r.set(i, true)
				defer r.set(i, false)
				if lead != nil {
					lead(ctx, i)
				} else {
					<-ctx.Done()
				}
			})
		}()
		t.Cleanup(func() { r.stop(i) })
	}
	return r
}

func (r *replicas) set(i int, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leading[i] = on
	if !on {
		delete(r.leading, i)
	}
	r.max = max(r.max, len(r.leading))
	close(r.changed)
	r.changed = make(chan struct{})
}

// stop ends replica i's RunLeader and waits for it.
func (r *replicas) stop(i int) {
	r.cancel[i]()
	select {
	case <-r.done[i]:
	case <-time.After(10 * time.Second):
		r.t.Errorf("replica %d's RunLeader did not return", i)
	}
}

// waitFor waits until cond holds on the leaders (under the lock).
func (r *replicas) waitFor(what string, cond func(leading map[int]bool) bool) {
	r.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		r.mu.Lock()
		ok, ch := cond(r.leading), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			r.t.Fatalf("%s: leaders %v", what, r.leading)
		}
	}
}

// waitAttempts waits until every replica but skip has tried the lease n more times, so that a
// follower had its chances to (wrongly) take it.
func (r *replicas) waitAttempts(n int64, skip int) {
	r.t.Helper()
	base := make([]int64, len(r.leases))
	for i, f := range r.leases {
		base[i] = f.attempts.Load()
	}
	deadline := time.Now().Add(15 * time.Second)
	for i, f := range r.leases {
		for i != skip && f.attempts.Load() < base[i]+n {
			if time.Now().After(deadline) {
				r.t.Fatalf("replica %d made no attempts", i)
			}
			time.Sleep(5 * time.Millisecond) // polling a counter of attempts paced by the lease's own timer
		}
	}
}

func (r *replicas) maxLeaders() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.max
}

func (r *replicas) leader() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.leading {
		return i
	}
	return -1
}

func TestLeaderHandoverOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	// The ttl leaves room for a slow renewal on a loaded machine: "never two leaders" is asserted.
	r := startReplicas(t, srv, 3, 2*time.Second, nil)
	one := func(l map[int]bool) bool { return len(l) == 1 }
	r.waitFor("one leader", one)
	first := r.leader()
	r.waitAttempts(3, -1)
	if r.leader() != first || r.maxLeaders() != 1 {
		t.Fatalf("leadership moved or doubled without cause: leader %d, max %d", r.leader(), r.maxLeaders())
	}

	// A leader that stops releases the lease: another takes over at its next attempt.
	r.stop(first)
	r.waitFor("a new leader after a clean stop", func(l map[int]bool) bool { return len(l) == 1 && !l[first] })
	second := r.leader()

	// A leader that dies (its store connection gone, no release): the lease lapses after its ttl and
	// the last replica takes over.
	r.leases[second].broken.Store(true)
	r.stop(second)
	r.waitFor("a new leader after a crash", func(l map[int]bool) bool { return len(l) == 1 && !l[first] && !l[second] })
	if n := r.maxLeaders(); n != 1 {
		t.Fatalf("at some point %d replicas led at once", n)
	}
}

func TestLeaderKeepsLeadingWhileStoreIsDown(t *testing.T) {
	srv := redistest.Start(t)
	r := startReplicas(t, srv, 2, 600*time.Millisecond, nil)
	r.waitFor("one leader", func(l map[int]bool) bool { return len(l) == 1 })
	leader := r.leader()
	follower := 1 - leader

	// Only the leader loses the store: it leads on; the lease lapses and the follower leads too.
	r.leases[leader].broken.Store(true)
	r.waitFor("the follower leads too", func(l map[int]bool) bool { return l[leader] && l[follower] })
	// The store is back: the old leader learns it lost and steps down.
	r.leases[leader].broken.Store(false)
	r.waitFor("one leader again", func(l map[int]bool) bool { return len(l) == 1 && l[follower] })

	// The whole store down: the leader leads on, nobody else takes over.
	r.leases[leader].broken.Store(true)
	r.leases[follower].broken.Store(true)
	r.waitAttempts(3, -1)
	r.mu.Lock()
	still := len(r.leading) == 1 && r.leading[follower]
	r.mu.Unlock()
	if !still {
		t.Fatal("leadership changed while the store was down")
	}
}

// TestStreamLeaderHandover: two replicas subscribe for one suite through the leader lease on a real
// Redis; the fake gateway sees one connection at a time; the leader dies; the other takes the lease,
// connects, and the tickets published afterwards reach the shared store.
func TestStreamLeaderHandover(t *testing.T) {
	srv := redistest.Start(t)
	g := newGateway(t)
	shared, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "tickets"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Close() })
	sink := &ticketSink{st: shared}
	r := startReplicas(t, srv, 2, 2*time.Second, func(ctx context.Context, i int) {
		c := stream.New(stream.Options{Open: g.open("secret1"), Handle: handler(sink), MinBackoff: 10 * time.Millisecond})
		c.Run(ctx)
	})
	r.waitFor("one leader", func(l map[int]bool) bool { return len(l) == 1 })
	g.wait(t, "one connection", func(s fakedingtalk.StreamStats) bool { return s.Connections == 1 })
	ts := newTickets()
	_, res, _ := g.fake.PublishStream("suite1", ts.event())
	g.wait(t, "first ticket taken", func(s fakedingtalk.StreamStats) bool { return s.Acked == 1 })
	if storedTicket(t, shared) != res.SuiteTicket {
		t.Fatal("first ticket not stored")
	}

	first := r.leader()
	r.leases[first].broken.Store(true) // dies without releasing
	r.stop(first)
	r.waitFor("the other replica leads", func(l map[int]bool) bool { return len(l) == 1 && !l[first] })
	g.wait(t, "the new leader connected", func(s fakedingtalk.StreamStats) bool { return s.Connections == 1 && s.Opens == 2 })
	for i := range 3 {
		_, res, _ = g.fake.PublishStream("suite1", ts.event())
		g.wait(t, fmt.Sprintf("ticket %d taken", i), func(s fakedingtalk.StreamStats) bool { return s.Acked == 2+i && s.Pending == 0 })
	}
	if storedTicket(t, shared) != res.SuiteTicket {
		t.Fatal("the newest ticket is not stored after the handover")
	}
	if n := r.maxLeaders(); n != 1 {
		t.Fatalf("%d replicas led at once", n)
	}
}
