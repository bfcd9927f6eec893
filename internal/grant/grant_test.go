package grant_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/flowerr"
	"github.com/tokend/tokend/internal/grant"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
)

var (
	_ grant.Store    = (*store.Memory)(nil)
	_ grant.Store    = (*store.Redis)(nil)
	_ grant.Upstream = (*dingtalk.Client)(nil)
)

type gate struct{ bans atomic.Int32 }

func (g *gate) Egress(context.Context) error { return nil }
func (g *gate) ReportBan(context.Context)    { g.bans.Add(1) }

// dingTalk is a fake userAccessToken: single-use codes and refresh tokens. fail, when set, answers
// the next call instead. release, when set, holds every call until it is closed.
type dingTalk struct {
	mu      sync.Mutex
	codes   map[string]bool // unused codes
	refresh map[string]bool // unused refresh tokens
	n       int
	calls   atomic.Int32
	fail    error
	release chan struct{}
}

func newDingTalk(codes ...string) *dingTalk {
	d := &dingTalk{codes: map[string]bool{}, refresh: map[string]bool{}}
	for _, c := range codes {
		d.codes[c] = true
	}
	return d
}

var refused = &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: "invalidAuthCode", Message: "used"}

func (d *dingTalk) UserAccessToken(ctx context.Context, app dingtalk.App, g dingtalk.UserGrant) (dingtalk.UserToken, error) {
	d.calls.Add(1)
	if d.release != nil {
		select {
		case <-d.release:
		case <-ctx.Done():
			return dingtalk.UserToken{}, ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.fail; f != nil {
		d.fail = nil
		return dingtalk.UserToken{}, f
	}
	if app.Secret != "app-secret" {
		return dingtalk.UserToken{}, &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: "invalidClientIdOrSecret", Class: dingtalk.ClassCredentials}
	}
	ok := d.codes[g.Code] || d.refresh[g.RefreshToken]
	delete(d.codes, g.Code)
	delete(d.refresh, g.RefreshToken)
	if !ok {
		return dingtalk.UserToken{}, refused
	}
	d.n++
	rt := fmt.Sprintf("user-rt-%d", d.n)
	d.refresh[rt] = true
	return dingtalk.UserToken{AccessToken: fmt.Sprintf("user-at-%d", d.n), RefreshToken: rt, ExpiresIn: 7200 * time.Second, CorpID: "dingcorp"}, nil
}

// countingStore counts GetNote calls (shared by the replicas of a test): a replica waiting for
// another's result polls the note, so many reads mean the others are waiting.
type countingStore struct {
	grant.Store
	gets *atomic.Int32
	want int32
	seen chan struct{} // closed when gets reaches want
	once *sync.Once
}

func (s *countingStore) GetNote(ctx context.Context, name string) (string, time.Duration, bool, error) {
	if s.gets.Add(1) >= s.want {
		s.once.Do(func() { close(s.seen) })
	}
	return s.Store.GetNote(ctx, name)
}

var crm = grant.App{Name: "crm", Cred: dingtalk.App{Type: dingtalk.Internal, Key: "dingcrm", Secret: "app-secret"}, Supported: true}

func newExchanger(t *testing.T, st grant.Store, up grant.Upstream, now func() time.Time) *grant.Exchanger {
	t.Helper()
	x, err := grant.New(grant.Options{Store: st, Gate: &gate{}, Upstream: up, Now: now, Poll: 5 * time.Millisecond,
		Apps: []grant.App{crm, {Name: "old", Supported: false}}})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// testConcurrent presents one code on three replicas, several times each, at once: one DingTalk call,
// the same answer everywhere.
func testConcurrent(t *testing.T, stores [3]grant.Store) {
	dt := newDingTalk("code-1")
	dt.release = make(chan struct{})
	c := fakeclock.New(time.Now())
	var xs []*grant.Exchanger
	// DingTalk answers once the replicas that do not call are seen waiting on the store: the one
	// that calls reads the note twice, each waiter once per poll.
	gets, once, seen := &atomic.Int32{}, &sync.Once{}, make(chan struct{})
	for _, st := range stores {
		cs := &countingStore{Store: st, gets: gets, want: 20, seen: seen, once: once}
		xs = append(xs, newExchanger(t, cs, dt, c.Now))
	}
	go func() {
		<-seen
		close(dt.release)
	}()
	var wg sync.WaitGroup
	results := make([]grant.Result, 9)
	errs := make([]error, 9)
	for i := range 9 {
		wg.Go(func() {
			results[i], _, errs[i] = xs[i%3].Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("presentation %d: %v", i, err)
		}
		if results[i] != results[0] {
			t.Fatalf("presentation %d got %+v, presentation 0 %+v", i, results[i], results[0])
		}
	}
	if n := dt.calls.Load(); n != 1 {
		t.Fatalf("DingTalk called %d times, want 1", n)
	}
	if results[0].AccessToken != "user-at-1" || results[0].RefreshToken != "user-rt-1" || results[0].CorpID != "dingcorp" ||
		!results[0].ExpiresAt.Equal(c.Now().Add(7200*time.Second).UTC().Truncate(time.Second)) {
		t.Fatalf("result %+v", results[0])
	}
}

func TestOneCodeOnThreeReplicasMakesOneCall(t *testing.T) {
	m := store.NewMemory(store.MemoryOptions{})
	testConcurrent(t, [3]grant.Store{m, m, m})
}

func TestOneCodeOnThreeReplicasMakesOneCallOnRealRedis(t *testing.T) {
	srv := redistest.Start(t)
	var st [3]grant.Store
	for i := range st {
		s, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "granttest"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		st[i] = s
	}
	testConcurrent(t, st)
}

func TestResultsAreReplayedForFiveMinutes(t *testing.T) {
	c := fakeclock.New(time.Now())
	m := store.NewMemory(store.MemoryOptions{Now: c.Now})
	dt := newDingTalk("code-1")
	a, b := newExchanger(t, m, dt, c.Now), newExchanger(t, m, dt, c.Now)
	first, replayed, err := a.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
	if err != nil || replayed {
		t.Fatalf("first: %v, replayed %v", err, replayed)
	}
	c.Advance(grant.DefaultHold - time.Millisecond)
	again, replayed, err := b.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
	if err != nil || !replayed || again != first || dt.calls.Load() != 1 {
		t.Fatalf("within 5 min: %+v, replayed %v, %v, calls %d", again, replayed, err, dt.calls.Load())
	}
	// The refresh token obtained is single-use too, and deduplicated the same way.
	r1, _, err := a.Exchange(t.Context(), "crm", dingtalk.UserGrant{RefreshToken: first.RefreshToken})
	if err != nil {
		t.Fatal(err)
	}
	r2, replayed, err := b.Exchange(t.Context(), "crm", dingtalk.UserGrant{RefreshToken: first.RefreshToken})
	if err != nil || r2 != r1 || !replayed || r1.AccessToken == first.AccessToken || dt.calls.Load() != 2 {
		t.Fatalf("refresh: %+v vs %+v, %v, calls %d", r1, r2, err, dt.calls.Load())
	}
	c.Advance(time.Millisecond)
	// After 5 minutes the held result is gone: the used code goes to DingTalk, which refuses it.
	_, _, err = b.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
	var ig *flowerr.InvalidGrantError
	if !errors.As(err, &ig) || ig.UpstreamCode != "invalidAuthCode" || dt.calls.Load() != 3 {
		t.Fatalf("after 5 min: %v, calls %d", err, dt.calls.Load())
	}
}

func TestRefusalsAreReplayedFailuresAreNot(t *testing.T) {
	c := fakeclock.New(time.Now())
	m := store.NewMemory(store.MemoryOptions{Now: c.Now})
	dt := newDingTalk("good")
	x := newExchanger(t, m, dt, c.Now)
	var ig *flowerr.InvalidGrantError
	for range 2 {
		if _, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "unknown"}); !errors.As(err, &ig) {
			t.Fatalf("unknown code: %v", err)
		}
	}
	if dt.calls.Load() != 1 {
		t.Fatalf("a refusal was not replayed: %d calls", dt.calls.Load())
	}
	dt.fail = &dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 503, Code: "http_503"}
	var un *flowerr.UnavailableError
	if _, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "good"}); !errors.As(err, &un) {
		t.Fatalf("503: %v", err)
	}
	if _, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "good"}); err != nil {
		t.Fatalf("a 5xx was replayed: %v", err)
	}
	dt.fail = &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 403, Code: "Forbidden.AccessDenied.IpNotInWhiteList", Class: dingtalk.ClassIPNotAllowed}
	var rej *flowerr.RejectedError
	if _, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "other"}); !errors.As(err, &rej) {
		t.Fatalf("ip not allowed: %v", err)
	}
	if _, _, err := x.Exchange(t.Context(), "old", dingtalk.UserGrant{Code: "x"}); !errors.Is(err, flowerr.ErrUnsupported) {
		t.Fatalf("corp app: %v", err)
	}
	if _, _, err := x.Exchange(t.Context(), "nope", dingtalk.UserGrant{Code: "x"}); !errors.Is(err, flowerr.ErrUnknown) {
		t.Fatalf("unknown app: %v", err)
	}
	var bad *flowerr.BadRequestError
	if _, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "x", RefreshToken: "y"}); !errors.As(err, &bad) {
		t.Fatalf("both: %v", err)
	}
}

func TestACallerGivingUpDoesNotCancelTheExchange(t *testing.T) {
	m := store.NewMemory(store.MemoryOptions{})
	dt := newDingTalk("code-1")
	dt.release = make(chan struct{})
	x := newExchanger(t, m, dt, time.Now)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		_, _, err := x.Exchange(ctx, "crm", dingtalk.UserGrant{Code: "code-1"})
		done <- err
	}()
	for dt.calls.Load() == 0 {
		// The call is made on another goroutine; wait for it to reach DingTalk.
		select {
		case err := <-done:
			t.Fatalf("returned before calling: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(dt.release)
	res, replayed, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
	if err != nil || res.AccessToken != "user-at-1" || dt.calls.Load() != 1 {
		t.Fatalf("retry after the caller gave up: %+v, %v, %v, calls %d", res, replayed, err, dt.calls.Load())
	}
}

// The store holds no user token, code or refresh token, nor anything that names them without the
// app secret.
func TestTheStoreLearnsNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	st, err := store.OpenRedis(store.RedisOptions{URL: "redis://" + mr.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	dt := newDingTalk("code-secret-1")
	x := newExchanger(t, st, dt, time.Now)
	res, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-secret-1"})
	if err != nil {
		t.Fatal(err)
	}
	keys := mr.Keys()
	if len(keys) == 0 {
		t.Fatal("nothing held in the store")
	}
	for _, k := range keys {
		v, _ := mr.Get(k)
		for _, secret := range []string{"code-secret-1", res.AccessToken, res.RefreshToken, "app-secret", "dingcorp"} {
			if strings.Contains(k, secret) || strings.Contains(v, secret) {
				t.Fatalf("the store's key %q or its value holds a secret", k)
			}
		}
	}
}

// downStore is a store that cannot be reached.
type downStore struct{}

var errDown = errors.New("store unreachable")

func (downStore) TryLockName(context.Context, string, string, time.Duration) (bool, error) {
	return false, errDown
}
func (downStore) UnlockName(context.Context, string, string) error { return errDown }
func (downStore) GetNote(context.Context, string) (string, time.Duration, bool, error) {
	return "", 0, false, errDown
}
func (downStore) SetNote(context.Context, string, string, time.Duration) error { return errDown }

func TestWithoutTheStoreARetryIsStillAnsweredHere(t *testing.T) {
	c := fakeclock.New(time.Now())
	dt := newDingTalk("code-1")
	x := newExchanger(t, downStore{}, dt, c.Now)
	first, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, replayed, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"})
	if err != nil || again != first || !replayed || dt.calls.Load() != 1 {
		t.Fatalf("retry: %v, same %v, replayed %v, calls %d", err, again == first, replayed, dt.calls.Load())
	}
	c.Advance(grant.DefaultHold)
	var ig *flowerr.InvalidGrantError
	if _, _, err := x.Exchange(t.Context(), "crm", dingtalk.UserGrant{Code: "code-1"}); !errors.As(err, &ig) || dt.calls.Load() != 2 {
		t.Fatalf("after 5 min: %v, calls %d", err, dt.calls.Load())
	}
}
