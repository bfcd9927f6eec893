package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// upstream is a hand-written DingTalk double: it counts calls, can hold them at a gate, fail them
// with a chosen error, and issues tokens that follow DingTalk's rule (same value while valid).
type upstream struct {
	life  time.Duration // lifetime of what it issues
	now   func() time.Time
	calls atomic.Int64

	mu      sync.Mutex
	gate    chan struct{} // when non-nil, calls wait for it to close
	entered chan struct{} // receives one value per call that reached the gate
	err     *dingtalk.Error
	seq     int
	value   map[string]string // app key -> current value
	expires map[string]time.Time
	same    bool // always return the same value (DingTalk renewing)
}

func newUpstream(life time.Duration) *upstream {
	return &upstream{life: life, now: time.Now, value: map[string]string{}, expires: map[string]time.Time{}, entered: make(chan struct{}, 1024)}
}

func (u *upstream) hold() chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gate = make(chan struct{})
	return u.gate
}

func (u *upstream) fail(err *dingtalk.Error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.err = err
}

// revoke makes the next fetch for key return a new value.
func (u *upstream) revoke(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.value, key)
}

func (u *upstream) issue(ctx context.Context, key string) (dingtalk.Grant, error) {
	u.calls.Add(1)
	u.mu.Lock()
	gate := u.gate
	u.mu.Unlock()
	if gate != nil {
		u.entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return dingtalk.Grant{}, &dingtalk.Error{Family: dingtalk.FamilyTransport, Code: "timeout", Class: dingtalk.ClassUnavailable}
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return dingtalk.Grant{}, u.err
	}
	now := u.now()
	if v, ok := u.value[key]; ok && now.Before(u.expires[key]) {
		u.expires[key] = now.Add(u.life)
		return dingtalk.Grant{Value: v, ExpiresIn: u.life}, nil
	}
	u.seq++
	v := fmt.Sprintf("tok-%s-%d", key, u.seq)
	u.value[key], u.expires[key] = v, now.Add(u.life)
	return dingtalk.Grant{Value: v, ExpiresIn: u.life}, nil
}

func (u *upstream) AccessToken(ctx context.Context, app dingtalk.App) (dingtalk.Grant, error) {
	return u.issue(ctx, app.Key)
}

func (u *upstream) JSAPITicket(ctx context.Context, _ dingtalk.API, accessToken string) (dingtalk.Grant, error) {
	return u.issue(ctx, "ticket:"+accessToken[:len("tok-")+3])
}

func apps(names ...string) []broker.App {
	var out []broker.App
	for _, n := range names {
		out = append(out, broker.App{Name: n, Cred: dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: n, Secret: "s3cr3t-" + n}})
	}
	return out
}

// newBroker builds a broker over st and up; it is not running unless the test calls run.
func newBroker(t *testing.T, st broker.Store, up broker.Upstream, opts broker.Options) *broker.Broker {
	t.Helper()
	opts.Store, opts.Upstream = st, up
	if opts.Apps == nil {
		opts.Apps = apps("crm")
	}
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run runs b until the test ends.
func run(t *testing.T, b *broker.Broker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond until it holds or the deadline passes: for effects of real time (a refresh
// scheduled for later), not for synchronisation with goroutines the test controls.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var crm = token.Key{App: "crm", Kind: token.AccessToken}

var _ broker.Store = (*store.Memory)(nil)
