package store

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

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

// clientCommon is the part of a go-redis client's options OpenRedis sets the same for every kind.
type clientCommon struct {
	dial, read, write, pool time.Duration
	ctxTimeout, noIdentity  bool
}

// kindOptions returns the common part, address, password and database of the concrete options
// OpenRedis makes from u for one kind of client.
type kindOptions func(u *redis.UniversalOptions) (clientCommon, string, string, int)

func simpleOptions(u *redis.UniversalOptions) (clientCommon, string, string, int) {
	o := u.Simple()
	return clientCommon{o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.DisableIdentity}, o.Addr, o.Password, o.DB
}

func clusterOptions(u *redis.UniversalOptions) (clientCommon, string, string, int) {
	o := u.Cluster()
	return clientCommon{o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.DisableIdentity}, o.Addrs[0], o.Password, 0
}

func failoverOptions(u *redis.UniversalOptions) (clientCommon, string, string, int) {
	o := u.Failover()
	return clientCommon{o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.DisableIdentity}, o.SentinelAddrs[0], o.Password, o.DB
}

// TestUniversalOptions checks that every kind of client OpenRedis makes gets the one option block:
// the operation timeout everywhere, context deadlines honoured, no CLIENT SETINFO, and a URL's own
// settings kept.
func TestUniversalOptions(t *testing.T) {
	const op = 300 * time.Millisecond
	want := clientCommon{op, op, op, op, true, true}
	tests := []struct {
		name  string
		opts  RedisOptions
		get   kindOptions
		addr  string
		pw    string
		db    int
		maint bool
	}{
		{"url", RedisOptions{URL: "rediss://user:urlpw@10.0.0.1:6380/3?pool_size=7", OpTimeout: op}, simpleOptions, "10.0.0.1:6380", "urlpw", 3, true},
		{"url with password", RedisOptions{URL: "redis://:urlpw@10.0.0.1:6380", Password: "filepw", OpTimeout: op}, simpleOptions, "10.0.0.1:6380", "filepw", 0, true},
		{"one addr", RedisOptions{Addrs: []string{"10.0.0.2:6379"}, Password: "pw", OpTimeout: op}, simpleOptions, "10.0.0.2:6379", "pw", 0, true},
		{"cluster", RedisOptions{Addrs: []string{"10.0.0.3:7000", "10.0.0.4:7000"}, Password: "pw", OpTimeout: op}, clusterOptions, "10.0.0.3:7000", "pw", 0, true},
		{"sentinel", RedisOptions{Addrs: []string{"10.0.0.5:26379"}, MasterName: "mymaster", Password: "pw", OpTimeout: op}, failoverOptions, "10.0.0.5:26379", "pw", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := universalOptions(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			got, addr, pw, db := tt.get(u)
			if got != want {
				t.Errorf("common options %+v, want %+v", got, want)
			}
			if addr != tt.addr || pw != tt.pw || db != tt.db {
				// The passwords here are test values.
				t.Errorf("addr %q password %q db %d, want %q %q %d", addr, pw, db, tt.addr, tt.pw, tt.db)
			}
			if m := u.MaintNotificationsConfig; tt.maint && (m == nil || m.Mode != maintnotifications.ModeDisabled) {
				t.Errorf("maintenance notifications not disabled")
			}
		})
	}
	u, err := universalOptions(RedisOptions{URL: "rediss://10.0.0.1:6380/0?pool_size=7", OpTimeout: op})
	if err != nil {
		t.Fatal(err)
	}
	if s := u.Simple(); s.TLSConfig == nil || s.PoolSize != 7 {
		t.Errorf("the URL's TLS or pool_size was lost: tls %v pool %d", s.TLSConfig != nil, s.PoolSize)
	}
}
