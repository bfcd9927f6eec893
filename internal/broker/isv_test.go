package broker_test

import (
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/suite"
	"github.com/tokend/tokend/internal/token"
)

var _ suite.Sink = (*broker.Broker)(nil)

const (
	isvSuite  = "suitekey1"
	isvSecret = "suite-secret-1"
)

func saasApp(corps ...string) broker.App {
	return broker.App{Name: "saas", JSAPITicket: true,
		ISV: &broker.ISVApp{Suite: dingtalk.Suite{Key: isvSuite, Secret: isvSecret}, Corps: corps}}
}

// isvWorld is a fake DingTalk with one suite and n brokers (replicas) sharing one real Redis.
type isvWorld struct {
	fake     *fakedingtalk.Server
	brokers  []*broker.Broker
	redisURL string
}

// openStore opens another handle on the world's Redis, as another replica would.
func (w *isvWorld) openStore(t *testing.T) *store.Redis {
	t.Helper()
	st, err := store.OpenRedis(store.RedisOptions{URL: w.redisURL, Prefix: "isv", OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newISVWorld(t *testing.T, n int, corps ...string) *isvWorld {
	t.Helper()
	return newISVWorldRetry(t, n, time.Minute, corps...)
}

func newISVWorldRetry(t *testing.T, n int, failRetry time.Duration, corps ...string) *isvWorld {
	t.Helper()
	return newISVWorldOpts(t, n, fakedingtalk.Options{}, broker.Options{FailureRetry: failRetry}, corps...)
}

// newISVWorldOpts builds the world with the fake's options fo and the brokers' options bo (Apps,
// Suites, Tickets and Store set here).
func newISVWorldOpts(t *testing.T, n int, fo fakedingtalk.Options, bo broker.Options, corps ...string) *isvWorld {
	t.Helper()
	fake := fakedingtalk.New(fo)
	t.Cleanup(fake.Close)
	hs := httptest.NewServer(fake)
	t.Cleanup(hs.Close)
	fake.AddSuite(isvSuite, isvSecret, false)
	client := dingtalk.New(dingtalk.Options{APIBase: hs.URL, OAPIBase: hs.URL})
	w := &isvWorld{fake: fake, redisURL: redistest.Start(t).URL()}
	for range n {
		st := w.openStore(t)
		opts := bo
		opts.Apps, opts.Suites, opts.Tickets = []broker.App{saasApp(corps...)}, client, st
		b := newBroker(t, st, client, opts)
		run(t, b)
		w.brokers = append(w.brokers, b)
	}
	return w
}

// push mints a ticket at the fake and hands it to replica i, as a callback push would.
func (w *isvWorld) push(t *testing.T, i int) {
	t.Helper()
	v, at, err := w.fake.MintSuiteTicket(isvSuite)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.brokers[i].SuiteTicket(t.Context(), "saas", v, at); err != nil {
		t.Fatal(err)
	}
}

func corpKey(corp string) token.Key {
	return token.Key{App: "saas", Kind: token.AccessToken, Corp: corp}
}

func TestISVSuiteTicketMissing(t *testing.T) {
	w := newISVWorld(t, 1)
	b := w.brokers[0]
	_, err := b.Token(t.Context(), token.Key{App: "saas", Kind: token.AccessToken})
	var ste *broker.SuiteTicketError
	if !errors.As(err, &ste) || ste.Code != "suite_ticket_missing" {
		t.Fatalf("suite token without a ticket: %v", err)
	}
	if _, err := b.Token(t.Context(), corpKey("dingcorpa")); !errors.As(err, &ste) {
		t.Fatalf("corp token without a ticket: %v", err)
	}
	if c := w.fake.ISVCalls(isvSuite, ""); c.Token != 0 {
		t.Fatalf("%d DingTalk calls without a ticket", c.Token)
	}
	waitFor(t, "ready", 5*time.Second, b.Ready)
	if s := b.Status()[0].AccessToken; s.State != broker.StateFailing || s.UpstreamCode != "suite_ticket_missing" {
		t.Fatalf("status %+v", s)
	}
	w.push(t, 0)
	got, err := b.Token(t.Context(), token.Key{App: "saas", Kind: token.AccessToken})
	if err != nil || !w.fake.ISVValid(fakedingtalk.KindSuiteToken, got.Value, time.Now()) {
		t.Fatalf("suite token after the push: %v", err)
	}
}

// TestISVColdCorpOneFetch: many callers on three replicas ask for a corp nobody has fetched: one
// DingTalk call, and every caller's token is the one alive.
func TestISVColdCorpOneFetch(t *testing.T) {
	w := newISVWorld(t, 3)
	w.fake.AuthorizeCorp(isvSuite, "dingcorpa")
	w.push(t, 0)
	var wg sync.WaitGroup
	got := make([]string, 60)
	errs := make([]error, 60)
	for i := range got {
		wg.Go(func() {
			tok, err := w.brokers[i%3].Token(t.Context(), corpKey("dingcorpa"))
			got[i], errs[i] = tok.Value, err
		})
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i] != got[0] || !w.fake.ISVValid(token.AccessToken, got[i], time.Now()) {
			t.Fatalf("caller %d got a token that is not the live one", i)
		}
	}
	if c := w.fake.ISVCalls(isvSuite, "dingcorpa"); c.Token != 1 {
		t.Fatalf("%d corp token fetches, want 1", c.Token)
	}
}

// TestISVInvalidateOnce: the same corp token reported on three replicas at once: one fetch.
func TestISVInvalidateOnce(t *testing.T) {
	w := newISVWorld(t, 3, "dingcorpa")
	w.fake.AuthorizeCorp(isvSuite, "dingcorpa")
	w.push(t, 0)
	first, err := w.brokers[0].Token(t.Context(), corpKey("dingcorpa"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range w.brokers[1:] {
		waitFor(t, "the token on every replica", 5*time.Second, func() bool {
			tok, err := b.Token(t.Context(), corpKey("dingcorpa"))
			return err == nil && tok.Value == first.Value
		})
	}
	before := w.fake.ISVCalls(isvSuite, "dingcorpa").Token
	var wg sync.WaitGroup
	got := make([]string, 9)
	for i := range got {
		wg.Go(func() {
			tok, err := w.brokers[i%3].InvalidateKey(t.Context(), corpKey("dingcorpa"), first.Value)
			if err != nil {
				t.Errorf("invalidate %d: %v", i, err)
			}
			got[i] = tok.Value
		})
	}
	wg.Wait()
	if n := w.fake.ISVCalls(isvSuite, "dingcorpa").Token - before; n != 1 {
		t.Fatalf("%d fetches for one report, want 1", n)
	}
	for i, v := range got {
		if v == first.Value || !w.fake.ISVValid(token.AccessToken, v, time.Now()) {
			t.Fatalf("reporter %d did not get the new live token", i)
		}
	}
}

// TestISVCorpNotAuthorized: a corp that has not authorized the suite is refused, and the refusal is
// remembered on every replica: no DingTalk call per request.
func TestISVCorpNotAuthorized(t *testing.T) {
	w := newISVWorld(t, 2)
	w.push(t, 0)
	for i := range 5 {
		_, err := w.brokers[i%2].Token(t.Context(), corpKey("dingnobody"))
		if !errors.Is(err, broker.ErrCorpNotFound) {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if c := w.fake.ISVCalls(isvSuite, "dingnobody"); c.Token != 1 {
		t.Fatalf("%d DingTalk calls for a refused corp, want 1", c.Token)
	}
	if corps, _ := w.brokers[0].Corps("saas"); len(corps) != 0 {
		t.Fatalf("refused corp listed: %+v", corps)
	}
}

// TestISVRelief: a relieved corp disappears from every replica and is refused from then on; a
// relief older than the last authorization is ignored.
func TestISVRelief(t *testing.T) {
	w := newISVWorld(t, 3)
	w.fake.AuthorizeCorp(isvSuite, "dingcorpa")
	w.push(t, 0)
	if _, err := w.brokers[0].Token(t.Context(), corpKey("dingcorpa")); err != nil {
		t.Fatal(err)
	}
	for _, b := range w.brokers {
		waitFor(t, "the corp on every replica", 5*time.Second, func() bool {
			corps, _ := b.Corps("saas")
			return len(corps) == 1 && corps[0].Corp == "dingcorpa"
		})
	}
	authorizedAt := time.Now()
	if err := w.brokers[1].CorpAuthorized(t.Context(), "saas", "dingcorpa", authorizedAt); err != nil {
		t.Fatal(err)
	}
	// A relief pushed before that authorization, repeated late: ignored.
	if err := w.brokers[1].CorpRelieved(t.Context(), "saas", "dingcorpa", authorizedAt.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if corps, _ := w.brokers[2].Corps("saas"); len(corps) != 1 {
		t.Fatalf("an older relief dropped the corp")
	}
	w.fake.RelieveCorp(isvSuite, "dingcorpa")
	if err := w.brokers[1].CorpRelieved(t.Context(), "saas", "dingcorpa", authorizedAt.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	calls := w.fake.ISVCalls(isvSuite, "dingcorpa").Token
	for _, b := range w.brokers {
		waitFor(t, "the corp gone from every replica", 5*time.Second, func() bool {
			corps, _ := b.Corps("saas")
			return len(corps) == 0
		})
		if _, err := b.Token(t.Context(), corpKey("dingcorpa")); !errors.Is(err, broker.ErrCorpNotFound) {
			t.Fatalf("relieved corp served: %v", err)
		}
	}
	if n := w.fake.ISVCalls(isvSuite, "dingcorpa").Token; n != calls {
		t.Fatalf("%d DingTalk calls for a relieved corp", n-calls)
	}
}

// TestISVRestartServesStored: a new replica serves the stored corp token without fetching.
func TestISVRestartServesStored(t *testing.T) {
	w := newISVWorld(t, 1, "dingcorpa")
	w.fake.AuthorizeCorp(isvSuite, "dingcorpa")
	w.push(t, 0)
	first, err := w.brokers[0].Token(t.Context(), corpKey("dingcorpa"))
	if err != nil {
		t.Fatal(err)
	}
	ticket, err := w.brokers[0].Token(t.Context(), token.Key{App: "saas", Kind: token.JSAPITicket, Corp: "dingcorpa"})
	if err != nil {
		t.Fatal(err)
	}
	calls := w.fake.ISVCalls(isvSuite, "dingcorpa")
	// A second replica on the same store, as after a restart, whose DingTalk cannot be reached.
	st := w.openStore(t)
	client := dingtalk.New(dingtalk.Options{APIBase: "http://127.0.0.1:1", OAPIBase: "http://127.0.0.1:1"})
	b := newBroker(t, st, client, broker.Options{Apps: []broker.App{saasApp("dingcorpa")}, Suites: client, Tickets: st})
	run(t, b)
	waitFor(t, "warm-up", 5*time.Second, b.Ready)
	got, err := b.Token(t.Context(), corpKey("dingcorpa"))
	if err != nil || got.Value != first.Value {
		t.Fatalf("restarted replica: %v", err)
	}
	gt, err := b.Token(t.Context(), token.Key{App: "saas", Kind: token.JSAPITicket, Corp: "dingcorpa"})
	if err != nil || gt.Value != ticket.Value {
		t.Fatalf("restarted replica's ticket: %v", err)
	}
	if c := w.fake.ISVCalls(isvSuite, "dingcorpa"); c != calls {
		t.Fatalf("calls %+v after the restart, want %+v", c, calls)
	}
}

// TestISVCorpsWhileStoreDown: with the store down, a valid corp token is served as it is, a report
// of it gets 503 without a fetch (no rotation war between replicas that cannot agree), and a corp
// this replica holds no token for is fetched once for its callers; when the store returns, that
// token is written back.
func TestISVCorpsWhileStoreDown(t *testing.T) {
	fake := fakedingtalk.New(fakedingtalk.Options{})
	t.Cleanup(fake.Close)
	hs := httptest.NewServer(fake)
	t.Cleanup(hs.Close)
	fake.AddSuite(isvSuite, isvSecret, false)
	fake.AuthorizeCorp(isvSuite, "dingcorpa")
	fake.AuthorizeCorp(isvSuite, "dingcorpb")
	client := dingtalk.New(dingtalk.Options{APIBase: hs.URL, OAPIBase: hs.URL})
	srv := redistest.Start(t)
	st, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "isv", OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b := newBroker(t, st, client, broker.Options{Apps: []broker.App{saasApp()}, Suites: client, Tickets: st,
		FailureRetry: time.Minute, StoreTimeout: 200 * time.Millisecond})
	run(t, b)
	v, at, _ := fake.MintSuiteTicket(isvSuite)
	if err := b.SuiteTicket(t.Context(), "saas", v, at); err != nil {
		t.Fatal(err)
	}
	a1, err := b.Token(t.Context(), corpKey("dingcorpa"))
	if err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	waitFor(t, "the store seen down", 10*time.Second, func() bool {
		_, _ = b.Token(t.Context(), corpKey("dingcorpc")) // a store read that fails
		return !b.StoreUp()
	})
	callsA := fake.ISVCalls(isvSuite, "dingcorpa").Token
	if got, err := b.Token(t.Context(), corpKey("dingcorpa")); err != nil || got.Value != a1.Value {
		t.Fatalf("valid corp token not served from memory: %v", err)
	}
	_, err = b.InvalidateKey(t.Context(), corpKey("dingcorpa"), a1.Value)
	var ue *broker.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("report while the store is down: %v, want unavailable", err)
	}
	if n := fake.ISVCalls(isvSuite, "dingcorpa").Token; n != callsA {
		t.Fatalf("a report while the store is down fetched the corp token (%d calls)", n-callsA)
	}
	if !fake.ISVValid(token.AccessToken, a1.Value, time.Now()) {
		t.Fatal("the served token was killed")
	}
	b1, err := b.Token(t.Context(), corpKey("dingcorpb"))
	if err != nil {
		t.Fatalf("corp without a token, store down: %v", err)
	}
	for range 3 {
		if got, err := b.Token(t.Context(), corpKey("dingcorpb")); err != nil || got.Value != b1.Value {
			t.Fatalf("second request: %v", err)
		}
	}
	if n := fake.ISVCalls(isvSuite, "dingcorpb").Token; n != 1 {
		t.Fatalf("%d fetches of a corp while the store is down, want 1", n)
	}

	srv.Restart()
	waitFor(t, "the fetched token written back", 20*time.Second, func() bool {
		rec, ok, err := st.Get(t.Context(), corpKey("dingcorpb"))
		return err == nil && ok && rec.Value == b1.Value
	})
	if tk, ok, err := st.GetSuiteTicket(t.Context(), "saas"); err != nil || !ok || tk.Value != v {
		t.Fatalf("suite ticket not written back to the restarted store: %v %v", ok, err)
	}
}

// TestISVRefusedCorpNotRetriedOnATimer: a corp DingTalk refuses is asked again only when a caller
// wants it after the refusal lapsed, never by the scheduler: made-up corp ids cost nothing over time.
func TestISVRefusedCorpNotRetriedOnATimer(t *testing.T) {
	w := newISVWorldRetry(t, 1, time.Second)
	w.push(t, 0)
	for _, k := range []token.Key{corpKey("dingnobody"), {App: "saas", Kind: token.JSAPITicket, Corp: "dingnobody"}} {
		if _, err := w.brokers[0].Token(t.Context(), k); !errors.Is(err, broker.ErrCorpNotFound) {
			t.Fatalf("%v: %v", k, err)
		}
	}
	calls := w.fake.ISVCalls(isvSuite, "dingnobody").Token
	if calls != 1 {
		t.Fatalf("%d calls, want 1", calls)
	}
	// Three refusal periods: the scheduler would have asked DingTalk again by now.
	deadline := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := w.fake.ISVCalls(isvSuite, "dingnobody").Token; n != calls {
			t.Fatalf("the refused corp was asked again without a caller (%d calls)", n)
		}
		time.Sleep(50 * time.Millisecond) // watching for a call that must not happen
	}
	// A caller after the refusal lapsed: DingTalk is asked again, once.
	if _, err := w.brokers[0].Token(t.Context(), corpKey("dingnobody")); !errors.Is(err, broker.ErrCorpNotFound) {
		t.Fatal(err)
	}
	if n := w.fake.ISVCalls(isvSuite, "dingnobody").Token; n != 2 {
		t.Fatalf("%d calls after the refusal lapsed, want 2", n)
	}
}

// TestISVProactiveRefreshOncePerWindow: three replicas keep a short-lived corp token fresh: each
// refresh is one fetch (consecutive tokens are issued a refresh window apart, never twice at once),
// and every replica ends up serving the one token alive.
func TestISVProactiveRefreshOncePerWindow(t *testing.T) {
	w := newISVWorldOpts(t, 3, fakedingtalk.Options{TokenTTL: 4 * time.Second},
		broker.Options{FailureRetry: time.Minute, Margin: 2 * time.Second}, "dingcorpa")
	w.fake.AuthorizeCorp(isvSuite, "dingcorpa")
	w.push(t, 0)
	issued := func() []fakedingtalk.ISVIssued {
		var out []fakedingtalk.ISVIssued
		for _, i := range w.fake.ISVIssued() {
			if i.Corp == "dingcorpa" && i.Kind == token.AccessToken {
				out = append(out, i)
			}
		}
		return out
	}
	waitFor(t, "four proactive refreshes", 20*time.Second, func() bool { return len(issued()) >= 5 })
	all := issued()
	for i := 1; i < len(all); i++ {
		if gap := all[i].IssuedAt.Sub(all[i-1].IssuedAt); gap < time.Second {
			t.Fatalf("corp tokens %d and %d fetched %v apart: two fetches for one refresh", i-1, i, gap)
		}
	}
	for _, b := range w.brokers {
		waitFor(t, "every replica on the live token", 5*time.Second, func() bool {
			tok, err := b.Token(t.Context(), corpKey("dingcorpa"))
			return err == nil && w.fake.ISVValid(token.AccessToken, tok.Value, time.Now())
		})
	}
}
