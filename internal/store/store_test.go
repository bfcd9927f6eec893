package store_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/store/storetest"
	"github.com/tokend/tokend/internal/token"
)

// TestMain silences go-redis, which logs every dial failure and Sentinel lookup to stderr: the
// tests provoke hundreds of them. The daemon decides for itself where go-redis logs go.
func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

var (
	_ broker.Store = (*store.Memory)(nil)
	_ broker.Store = (*store.Redis)(nil)
)

func TestMemoryContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		clock := fakeclock.New(time.Now())
		m := store.NewMemory(store.MemoryOptions{Now: clock.Now})
		return storetest.Harness{A: m, B: m, Now: clock.Now, Advance: clock.Advance}
	})
}

// openRedis opens a store as tokend would, closed when the test ends.
func openRedis(t *testing.T, opts store.RedisOptions) *store.Redis {
	t.Helper()
	s, err := store.OpenRedis(opts)
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// prefixes hands out a fresh key prefix per subtest, so that subtests sharing one server start empty.
type prefixes struct{ n atomic.Int64 }

func (p *prefixes) next() string { return fmt.Sprintf("t%d", p.n.Add(1)) }

// miniredisPair opens two handles (two replicas) on a fresh miniredis whose clock the test moves with
// advance. miniredis keeps TTLs as durations that only FastForward shortens, while TIME (which Spend
// and TakeSlot read) and absolute expiries (PEXPIREAT) follow the time set with SetTime: advance moves
// both, and now reads that time.
func miniredisPair(t *testing.T) (a, b *store.Redis, now func() time.Time, advance func(time.Duration)) {
	t.Helper()
	mr := miniredis.RunT(t)
	clock := fakeclock.New(time.Now())
	mr.SetTime(clock.Now())
	advance = func(d time.Duration) {
		clock.Advance(d)
		mr.SetTime(clock.Now())
		mr.FastForward(d)
	}
	opts := store.RedisOptions{URL: "redis://" + mr.Addr(), Prefix: "tokend"}
	return openRedis(t, opts), openRedis(t, opts), clock.Now, advance
}

// redisPair opens two handles (two replicas) on the Redis at url under a fresh prefix from p, so
// that subtests sharing one server start empty. Its clock is the wall clock.
func redisPair(t *testing.T, url string, p *prefixes) (a, b *store.Redis) {
	t.Helper()
	opts := store.RedisOptions{URL: url, Prefix: p.next()}
	return openRedis(t, opts), openRedis(t, opts)
}

func TestMiniredisContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		a, b, now, advance := miniredisPair(t)
		return storetest.Harness{A: a, B: b, Now: now, Advance: advance}
	})
}

func TestRedisContract(t *testing.T) {
	srv := redistest.Start(t)
	var p prefixes
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		a, b := redisPair(t, srv.URL(), &p)
		return storetest.Harness{A: a, B: b}
	})
}

func TestRedisClusterContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 0)
	var p prefixes
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		opts := store.RedisOptions{Addrs: c.Addrs(), Prefix: p.next()}
		return storetest.Harness{A: openRedis(t, opts), B: openRedis(t, opts)}
	})
}

func TestRedisSentinelContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Sentinel")
	}
	s := redistest.StartSentinel(t)
	var p prefixes
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		opts := store.RedisOptions{Addrs: s.SentinelAddrs(), MasterName: s.MasterName(), Prefix: p.next()}
		return storetest.Harness{A: openRedis(t, opts), B: openRedis(t, opts)}
	})
}

// watcher runs Subscribe in the background and counts ready calls.
type watcher struct {
	ready  chan struct{}
	events chan token.Record
}

func watch(t *testing.T, s interface {
	Subscribe(context.Context, func(), func(token.Key, token.Record)) error
}) *watcher {
	t.Helper()
	w := &watcher{ready: make(chan struct{}, 64), events: make(chan token.Record, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Subscribe(ctx, func() { w.ready <- struct{}{} }, func(_ token.Key, r token.Record) { w.events <- r })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	w.waitReady(t)
	return w
}

func (w *watcher) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-w.ready:
	case <-time.After(20 * time.Second):
		t.Fatal("Subscribe did not call ready within 20s")
	}
}

func (w *watcher) waitValue(t *testing.T, value string) token.Record {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case r := <-w.events:
			if r.Value == value {
				return r
			}
		case <-timeout:
			t.Fatalf("announcement of %q not received within 20s", value)
		}
	}
}

// putEventually retries Put until the store answers, for use right after an outage.
func putEventually(t *testing.T, s *store.Redis, k token.Key, gen int64, tk token.Token) token.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, written, err := s.Put(t.Context(), k, gen, tk)
		if err == nil {
			if !written {
				t.Fatalf("Put gen %d not written; current generation %d", gen, rec.Generation)
			}
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("Put still failing 20s after the outage: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // waiting out a real outage; nothing to wait on instead
	}
}

func tokenFor(value string) token.Token {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return token.Token{Value: value, ExpiresAt: now.Add(2 * time.Hour), FirstSeen: now.Add(-time.Hour), FetchedAt: now}
}

// TestRedisSubscribeSurvivesRestart shows the way replicas learn of new tokens: a Put through one
// handle reaches Subscribe on another, and keeps doing so after the Redis server restarts, with ready
// called again so the subscriber can re-read what it missed.
func TestRedisSubscribeSurvivesRestart(t *testing.T) {
	srv := redistest.Start(t)
	opts := store.RedisOptions{URL: srv.URL(), OpTimeout: 500 * time.Millisecond}
	writer, reader := openRedis(t, opts), openRedis(t, opts)
	k := token.Key{App: "crm", Kind: token.AccessToken}

	w := watch(t, reader)
	rec := putEventually(t, writer, k, 0, tokenFor("before-restart"))
	if got := w.waitValue(t, "before-restart"); got.Generation != rec.Generation {
		t.Fatalf("announced generation %d, want %d", got.Generation, rec.Generation)
	}

	srv.Restart()
	w.waitReady(t) // re-subscribed
	// The restarted server is empty: generation 0 again.
	rec = putEventually(t, writer, k, 0, tokenFor("after-restart"))
	if got := w.waitValue(t, "after-restart"); got.Generation != 1 || !got.ExpiresAt.Equal(rec.ExpiresAt) {
		t.Fatalf("after restart announced gen %d expiring %v, want gen 1 expiring %v", got.Generation, got.ExpiresAt, rec.ExpiresAt)
	}
}

// TestRedisFrozen checks that no call hangs on a Redis that accepts connections but never answers.
func TestRedisFrozen(t *testing.T) {
	srv := redistest.Start(t)
	const opTimeout = 300 * time.Millisecond
	s := openRedis(t, store.RedisOptions{URL: srv.URL(), OpTimeout: opTimeout})
	fresh := openRedis(t, store.RedisOptions{URL: srv.URL(), OpTimeout: opTimeout}) // no pooled connection yet
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	w := watch(t, s)

	srv.Freeze()
	t.Cleanup(srv.Thaw) // so the other cleanups meet a live server should the test stop early
	k := token.Key{App: "crm", Kind: token.AccessToken}
	calls := map[string]func(*store.Redis) error{
		"Get":     func(s *store.Redis) error { _, _, err := s.Get(t.Context(), k); return err },
		"Put":     func(s *store.Redis) error { _, _, err := s.Put(t.Context(), k, 0, tokenFor("v")); return err },
		"TryLock": func(s *store.Redis) error { _, err := s.TryLock(t.Context(), k, "a", time.Minute); return err },
		"Unlock":  func(s *store.Redis) error { return s.Unlock(t.Context(), k, "a") },
		"GetNote": func(s *store.Redis) error { _, _, _, err := s.GetNote(t.Context(), "n"); return err },
		"SetNote": func(s *store.Redis) error { return s.SetNote(t.Context(), "n", "v", time.Minute) },
		"Spend":   func(s *store.Redis) error { _, err := s.Spend(t.Context(), "b", 1, time.Minute); return err },
		"Ping":    func(s *store.Redis) error { return s.Ping(t.Context()) },
	}
	for name, call := range calls {
		for hname, h := range map[string]*store.Redis{"pooled": s, "fresh": fresh} {
			start := time.Now()
			err := call(h)
			if d := time.Since(start); d > opTimeout+time.Second {
				t.Errorf("%s (%s) on a frozen Redis took %v, want about %v", name, hname, d, opTimeout)
			}
			if err == nil {
				t.Errorf("%s (%s) on a frozen Redis succeeded", name, hname)
			}
		}
	}

	// Subscribe returns promptly when its context ends, frozen Redis or not.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fresh.Subscribe(ctx, func() {}, func(token.Key, token.Record) {})
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Subscribe did not return within 3s of its context ending on a frozen Redis")
	}

	srv.Thaw()
	rec := putEventually(t, s, k, 0, tokenFor("after-thaw"))
	w.waitValue(t, "after-thaw")
	if rec.Generation != 1 {
		t.Fatalf("generation %d after thaw, want 1", rec.Generation)
	}
}

// TestRedisClusterFailover keeps using the store while a master of the cluster dies and its replica
// takes over.
func TestRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 1)
	opts := store.RedisOptions{Addrs: c.Addrs(), OpTimeout: 500 * time.Millisecond}
	writer, reader := openRedis(t, opts), openRedis(t, opts)
	w := watch(t, reader)
	// Enough apps to land on every master's slots.
	const apps = 12
	for i := range apps {
		k := token.Key{App: fmt.Sprintf("app%d", i), Kind: token.AccessToken}
		putEventually(t, writer, k, 0, tokenFor(fmt.Sprintf("before-%d", i)))
		w.waitValue(t, fmt.Sprintf("before-%d", i))
	}
	c.KillMaster(0)
	c.WaitOK()
	expectAnnounced(t, writer, w)
	for i := range apps {
		k := token.Key{App: fmt.Sprintf("app%d", i), Kind: token.AccessToken}
		// Replication is asynchronous: the new master may have lost the last write, so re-read.
		rec, ok := getEventually(t, writer, k)
		gen := int64(0)
		if ok {
			gen = rec.Generation
		}
		putEventually(t, writer, k, gen, tokenFor(fmt.Sprintf("after-%d", i)))
		w.waitValue(t, fmt.Sprintf("after-%d", i))
	}
}

// getEventually retries Get until the store answers, for use right after an outage.
func getEventually(t *testing.T, s *store.Redis, k token.Key) (token.Record, bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, ok, err := s.Get(t.Context(), k)
		if err == nil {
			return rec, ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get %s still failing 20s after the outage: %v", k, err)
		}
		time.Sleep(50 * time.Millisecond) // waiting out a real outage; nothing to wait on instead
	}
}

// expectAnnounced writes probe records through writer until the watcher receives one: after an
// outage the subscriber may re-subscribe after the first writes, which it then re-reads instead.
func expectAnnounced(t *testing.T, writer *store.Redis, w *watcher) {
	t.Helper()
	k := token.Key{App: "probe", Kind: token.AccessToken}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if rec, ok, err := writer.Get(t.Context(), k); err == nil {
			gen := int64(0)
			if ok {
				gen = rec.Generation
			}
			_, _, _ = writer.Put(t.Context(), k, gen, tokenFor(fmt.Sprintf("probe-%d", i)))
		}
		wait := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case r := <-w.events:
				if strings.HasPrefix(r.Value, "probe-") {
					return
				}
			case <-wait:
				break drain
			}
		}
	}
	t.Fatal("no write announced within 30s of the outage")
}

// TestRedisSentinelFailover keeps using the store while the master dies and Sentinel promotes the
// replica.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Sentinel")
	}
	s := redistest.StartSentinel(t)
	opts := store.RedisOptions{Addrs: s.SentinelAddrs(), MasterName: s.MasterName(), OpTimeout: 500 * time.Millisecond}
	writer, reader := openRedis(t, opts), openRedis(t, opts)
	w := watch(t, reader)
	k := token.Key{App: "crm", Kind: token.AccessToken}
	putEventually(t, writer, k, 0, tokenFor("before"))
	w.waitValue(t, "before")

	old := s.KillMaster()
	s.WaitFailover(old)
	expectAnnounced(t, writer, w)
	rec, ok := getEventually(t, writer, k)
	gen := int64(0)
	if ok {
		gen = rec.Generation
	}
	putEventually(t, writer, k, gen, tokenFor("after"))
	w.waitValue(t, "after")
}

// TestRedisKeys checks the key layout: everything of one app under one Cluster hash tag, the key of a
// record dropped an hour after its token expires, and nothing but what was given stored.
func TestRedisKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	s := openRedis(t, store.RedisOptions{URL: "redis://" + mr.Addr(), Prefix: "pfx"})
	k := token.Key{App: "crm", Kind: token.JSAPITicket}
	tk := tokenFor("ticket-value")
	if _, _, err := s.Put(t.Context(), k, 0, tk); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLock(t.Context(), k, "owner-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNote(t.Context(), "ban", "x", time.Minute); err != nil {
		t.Fatal(err)
	}
	want := []string{"pfx:note:ban", "pfx:{crm}:jsapi_ticket", "pfx:{crm}:jsapi_ticket:lock"}
	if got := mr.Keys(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("keys = %q, want %q", got, want)
	}
	fields := map[string]string{
		"generation":    "1",
		"value":         "ticket-value",
		"expires_ms":    fmt.Sprint(tk.ExpiresAt.UnixMilli()),
		"first_seen_ms": fmt.Sprint(tk.FirstSeen.UnixMilli()),
		"fetched_ms":    fmt.Sprint(tk.FetchedAt.UnixMilli()),
	}
	got, _ := mr.HKeys("pfx:{crm}:jsapi_ticket")
	if len(got) != len(fields) {
		t.Fatalf("record fields = %q, want %d fields", got, len(fields))
	}
	for f, v := range fields {
		if g := mr.HGet("pfx:{crm}:jsapi_ticket", f); g != v {
			t.Errorf("field %s = %q, want %q", f, g, v)
		}
	}
	ttl := mr.TTL("pfx:{crm}:jsapi_ticket")
	if want := time.Until(tk.ExpiresAt) + store.RecordRetention; ttl < want-5*time.Second || ttl > want+time.Second {
		t.Fatalf("record TTL = %v, want about %v (expiry + retention)", ttl, want)
	}
	if lockOwner, _ := mr.Get("pfx:{crm}:jsapi_ticket:lock"); lockOwner != "owner-1" {
		t.Fatalf("lock holds %q, want the owner", lockOwner)
	}
}

// TestRedisBudgetKeys checks the key layout of a budget: one counter per window, named by the window
// number on the server's clock, under the prefix's hash tag, living two windows, and a refused call
// not counted.
func TestRedisBudgetKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	// 7.3 s into window 1234567 of 10 s, by the server's clock; the client's clock plays no part.
	mr.SetTime(time.UnixMilli(12345670000 + 7300))
	s := openRedis(t, store.RedisOptions{URL: "redis://" + mr.Addr(), Prefix: "pfx"})
	const window = 10 * time.Second
	for i, want := range []time.Duration{0, 0, 2700 * time.Millisecond, 2700 * time.Millisecond} {
		wait, err := s.Spend(t.Context(), "dingtalk:gettoken", 2, window)
		if err != nil {
			t.Fatal(err)
		}
		if wait != want {
			t.Fatalf("call %d: wait %v, want %v", i+1, wait, want)
		}
	}
	const key = "{pfx}:budget:dingtalk:gettoken:1234567"
	if got := mr.Keys(); len(got) != 1 || got[0] != key {
		t.Fatalf("keys = %q, want [%q]", got, key)
	}
	if n, _ := mr.Get(key); n != "2" {
		t.Fatalf("counter = %q, want 2 (refused calls not counted)", n)
	}
	if ttl := mr.TTL(key); ttl != 2*window {
		t.Fatalf("counter TTL = %v, want two windows (%v)", ttl, 2*window)
	}
	// The next window, by the server's clock, has a counter of its own.
	mr.SetTime(time.UnixMilli(12345680000))
	if wait, err := s.Spend(t.Context(), "dingtalk:gettoken", 2, window); err != nil || wait != 0 {
		t.Fatalf("first call in the next window = %v, %v; want 0", wait, err)
	}
	if n, _ := mr.Get("{pfx}:budget:dingtalk:gettoken:1234568"); n != "1" {
		t.Fatalf("next window's counter = %q, want 1", n)
	}
}

// TestRedisRecordWithoutFetchedAt: a record written by a tokend that did not keep fetched_ms reads
// with a zero FetchedAt, and can be overwritten.
func TestRedisRecordWithoutFetchedAt(t *testing.T) {
	mr := miniredis.RunT(t)
	s := openRedis(t, store.RedisOptions{URL: "redis://" + mr.Addr(), Prefix: "pfx"})
	k := token.Key{App: "crm", Kind: token.AccessToken}
	old := tokenFor("old-value")
	mr.HSet("pfx:{crm}:access_token",
		"generation", "4",
		"value", old.Value,
		"expires_ms", fmt.Sprint(old.ExpiresAt.UnixMilli()),
		"first_seen_ms", fmt.Sprint(old.FirstSeen.UnixMilli()),
	)
	want := token.Record{Token: old, Generation: 4}
	want.FetchedAt = time.Time{}
	rec, ok, err := s.Get(t.Context(), k)
	if err != nil || !ok || rec != want {
		t.Fatalf("Get = %s, %v, %v; want %s", describe(rec), ok, err, describe(want))
	}
	// A refused Put reports the old record the same way.
	if rec, written, err := s.Put(t.Context(), k, 3, tokenFor("stale")); err != nil || written || rec != want {
		t.Fatalf("refused Put = %s, %v, %v; want %s", describe(rec), written, err, describe(want))
	}
	next := tokenFor("new-value")
	rec, written, err := s.Put(t.Context(), k, 4, next)
	if want := (token.Record{Token: next, Generation: 5}); err != nil || !written || rec != want {
		t.Fatalf("Put over the old record = %s, %v, %v; want %s", describe(rec), written, err, describe(want))
	}
}

// describe shows a record with the fingerprint of its value, not the value.
func describe(r token.Record) string {
	return fmt.Sprintf("{gen %d, value %s, expires %v, first seen %v, fetched %v}",
		r.Generation, token.Fingerprint(r.Value), r.ExpiresAt, r.FirstSeen, r.FetchedAt)
}

// TestRedisUndecodableAnnouncement: a message on the channel that does not decode makes Subscribe
// call ready, so the caller re-reads instead of missing a write.
func TestRedisUndecodableAnnouncement(t *testing.T) {
	mr := miniredis.RunT(t)
	s := openRedis(t, store.RedisOptions{URL: "redis://" + mr.Addr()})
	w := watch(t, s)
	for _, msg := range []string{
		"",
		"garbage",
		"1:1,1:1,3:crm,12:access_token,1:0,1:0,0:,",     // version 1, from a tokend without fetched-at
		"1:3,1:1,3:crm,12:access_token,1:0,1:0,1:0,0:,", // a later version
	} {
		mr.Publish(store.DefaultPrefix+":events", msg)
		w.waitReady(t)
	}
	select {
	case r := <-w.events:
		t.Fatalf("undecodable message delivered as generation %d", r.Generation)
	default:
	}
}

func TestOpenRedisOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts store.RedisOptions
	}{
		{"nothing", store.RedisOptions{}},
		{"url and addrs", store.RedisOptions{URL: "redis://127.0.0.1:1", Addrs: []string{"127.0.0.1:2"}}},
		{"url and master", store.RedisOptions{URL: "redis://127.0.0.1:1", MasterName: "m"}},
		{"bad scheme", store.RedisOptions{URL: "http://127.0.0.1:1"}},
		{"bad url", store.RedisOptions{URL: "redis://user:s3cr3t-pw@127.0.0.1:1:2:%zz"}},
		{"bad addr", store.RedisOptions{Addrs: []string{"127.0.0.1"}}},
		{"brace in prefix", store.RedisOptions{URL: "redis://127.0.0.1:1", Prefix: "a{b"}},
		{"negative timeout", store.RedisOptions{URL: "redis://127.0.0.1:1", OpTimeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.OpenRedis(tc.opts)
			if err == nil {
				_ = s.Close()
				t.Fatal("OpenRedis accepted invalid options")
			}
			if strings.Contains(err.Error(), "s3cr3t-pw") {
				t.Fatal("error repeats the password")
			}
		})
	}
	for _, opts := range []store.RedisOptions{
		{URL: "redis://127.0.0.1:1/0"},
		{URL: "rediss://127.0.0.1:1"},
		{Addrs: []string{"127.0.0.1:1"}},
		{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}},
		{Addrs: []string{"127.0.0.1:1"}, MasterName: "m", Password: "p"},
	} {
		s, err := store.OpenRedis(opts)
		if err != nil {
			t.Fatalf("OpenRedis(%+v): %v", opts, err)
		}
		_ = s.Close()
	}
}

// TestRedisPassword checks that Password authenticates, overriding the URL's.
func TestRedisPassword(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.RequireAuth("right-pw")
	bad := openRedis(t, store.RedisOptions{URL: "redis://:wrong-pw@" + mr.Addr()})
	if err := bad.Ping(t.Context()); err == nil {
		t.Fatal("Ping with the wrong password succeeded")
	} else if strings.Contains(err.Error(), "wrong-pw") {
		t.Fatal("error repeats the password")
	}
	good := openRedis(t, store.RedisOptions{URL: "redis://:wrong-pw@" + mr.Addr(), Password: "right-pw"})
	if err := good.Ping(t.Context()); err != nil {
		t.Fatalf("Ping with Password: %v", err)
	}
}

// TestMemorySlowSubscriber: a subscriber that stops taking announcements never blocks Put; when it
// catches up it is told to re-read.
func TestMemorySlowSubscriber(t *testing.T) {
	m := store.NewMemory(store.MemoryOptions{})
	block := make(chan struct{})
	ready := make(chan struct{}, 4)
	got := make(chan int64, store.SubscriberBuffer*2)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Subscribe(ctx, func() { ready <- struct{}{} }, func(_ token.Key, r token.Record) {
			<-block
			got <- r.Generation
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-ready

	k := token.Key{App: "crm", Kind: token.AccessToken}
	tk := tokenFor("v")
	for gen := range int64(store.SubscriberBuffer + 10) {
		if _, written, err := m.Put(t.Context(), k, gen, tk); err != nil || !written {
			t.Fatalf("Put gen %d = %v, %v", gen, written, err)
		}
	}
	close(block)
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("a subscriber that fell behind was not told to re-read")
	}
	// New writes are delivered again.
	last := int64(store.SubscriberBuffer + 10)
	if _, written, err := m.Put(t.Context(), k, last, tk); err != nil || !written {
		t.Fatalf("Put = %v, %v", written, err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case g := <-got:
			if g == last+1 {
				return
			}
		case <-timeout:
			t.Fatal("no delivery after catching up")
		}
	}
}
