package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/token"
)

// lockSpec is the cluster of the lock scenarios. The refresh lock lapses upstream.timeout + 5 s after
// it was taken (broker.New); the margin is longer than that plus a slow fetch, as in production
// (10 m against 15 s), so that a lapsed lock costs no client an expired token. One app, so that the
// one lock taken is that app's.
func lockSpec() spec {
	return spec{replicas: 3, apps: 1, tokenTTL: 28 * time.Second, margin: 13 * time.Second,
		timeout: 2 * time.Second, retry: 2 * time.Second}
}

const (
	// lockLatency slows DingTalk so that a kill lands while the lock holder's call is in flight.
	lockLatency = 1500 * time.Millisecond
	// lockLapse is how long the broker's refresh lock lives: upstream.timeout + 5 s.
	lockLapse = 2*time.Second + 5*time.Second
)

func lockKey(app string) string { return "tokend:{" + app + "}:" + string(token.AccessToken) + ":lock" }

// lockHolder waits for the next upstream token call of a to arrive at the fake (which counts a call
// on arrival, before its latency), then returns the replica whose refresh-lock acquisitions grew
// since acquired was taken: the one holding the lock while its call is in flight.
func (c *cluster) lockHolder(a app, baseCalls int, acquired []float64, timeout time.Duration) *replica {
	t := c.t
	t.Helper()
	eventually(t, timeout, "a refresh call in flight", func() bool { return c.fake.calls(t)[a.clientID].Token > baseCalls })
	var holders []*replica
	for i, r := range c.replicas {
		if c.metric(r, "tokend_lock_acquisitions_total", map[string]string{"result": "acquired"}) > acquired[i] {
			holders = append(holders, r)
		}
	}
	if len(holders) != 1 {
		t.Fatalf("%d replicas took the refresh lock for one refresh, want 1", len(holders))
	}
	return holders[0]
}

func (c *cluster) acquisitions() []float64 {
	var out []float64
	for _, r := range c.replicas {
		out = append(out, c.metric(r, "tokend_lock_acquisitions_total", map[string]string{"result": "acquired"}))
	}
	return out
}

// slowRefreshUnderLoad slows DingTalk's token calls down to lockLatency, puts the cluster under
// client load and waits for the next refresh of a to be in flight. It returns DingTalk's token of a
// from before that refresh, a's upstream token calls before it, the load, and the replica holding
// the refresh lock.
func (c *cluster) slowRefreshUnderLoad(a app) (before fakedingtalk.Issued, base int, l *load, holder *replica) {
	t := c.t
	t.Helper()
	c.fake.fault(t, "", fakedingtalk.Fault{Latency: lockLatency, Endpoint: fakedingtalk.EndpointToken})
	before = c.fake.current(t, a.clientID, token.AccessToken)
	base = c.tokenCalls()[a.name]
	acquired := c.acquisitions()
	l = c.startLoad(15, 50*time.Millisecond, c.appNames(), 2*time.Minute)
	holder = c.lockHolder(a, base, acquired, c.spec.tokenTTL)
	return before, base, l, holder
}

// lockOwner returns the owner of a's refresh lock in Redis; the test fails when there is none.
func (c *cluster) lockOwner(a app) string {
	t := c.t
	t.Helper()
	owner, err := c.redis.Do("GET", lockKey(a.name))
	if err != nil || owner == "" {
		t.Fatalf("the refresh lock is not in Redis while its holder's call is in flight (err %v)", err)
	}
	return owner
}

// killLockHolder: the replica holding the refresh lock dies (SIGKILL) while its DingTalk call is in
// flight; another replica completes the refresh once the lock lapses, and no client receives an
// invalid token or an error.
func killLockHolder(t *testing.T, bins binaries) {
	c := startCluster(t, bins, lockSpec())
	c.waitReady()
	a := c.apps[0]
	before, base, l, holder := c.slowRefreshUnderLoad(a)
	owner := c.lockOwner(a)
	var survivors []*replica
	for _, r := range c.replicas {
		if r != holder {
			survivors = append(survivors, r)
		}
	}
	served := c.current(survivors[0], a.name).expiresAt
	l.retire(holder.i)
	holder.proc.signal(t, syscall.SIGKILL)
	killed := time.Now()
	holder.proc.wait(t, 10*time.Second)

	// The kill landed mid-refresh: the dead replica still holds the lock and DingTalk renewed nothing.
	if got, err := c.redis.Do("GET", lockKey(a.name)); err != nil || got != owner {
		t.Errorf("right after the kill the lock is no longer the dead holder's (err %v): the kill did not land mid-refresh", err)
	}
	if now := c.fake.current(t, a.clientID, token.AccessToken); !now.ExpiresAt.Equal(before.ExpiresAt) {
		t.Errorf("DingTalk renewed the token before the kill: the kill did not land mid-refresh")
	}
	// Nobody calls DingTalk while the dead replica's lock lives; then a survivor takes over.
	lapsed := eventually(t, lockLapse+2*time.Second, "the dead holder's lock lapses", func() bool {
		// Calls first: a call counted before the lock is seen still held was made while it held.
		n := c.tokenCalls()[a.name]
		got, err := c.redis.Do("GET", lockKey(a.name))
		if err == nil && got == owner && n > base+1 {
			t.Fatalf("a replica called DingTalk while the dead replica's lock still held (%d calls; %d Redis blips)", n-base, c.storeBlips(killed))
		}
		return err == nil && got != owner
	})
	renewed := eventually(t, time.Until(before.ExpiresAt), "a surviving replica renews the token before it expires", func() bool {
		return c.fake.current(t, a.clientID, token.AccessToken).ExpiresAt.After(before.ExpiresAt)
	})
	for _, r := range survivors {
		eventually(t, 2*time.Second, "every survivor serves the renewed token", func() bool {
			s := c.credential(t.Context(), r, a.name, token.AccessToken)
			return s.ok() && s.expiresAt.After(served)
		})
	}
	samples := l.stop()
	calls := c.tokenCalls()[a.name] - base

	// The dead replica's replacement warms up from Redis: it serves the survivors' token without
	// calling DingTalk.
	replacement := c.addReplica()
	want := c.current(survivors[0], a.name)
	if got := c.current(replacement, a.name); got.value != want.value || !got.expiresAt.Equal(want.expiresAt) {
		t.Errorf("the replacement replica serves another token than the survivors")
	}
	if n := c.tokenCalls()[a.name] - base; n != calls {
		t.Errorf("the replacement replica's warm-up cost %d upstream calls, want 0 (Redis holds a valid token)", n-calls)
	}

	v := check(samples, c.fake.issued(t), nil)
	survivorErrors := failures(samples, func(s sample) bool { return s.replica != holder.i })
	interrupted := len(failures(samples, func(s sample) bool { return s.replica == holder.i }))
	if len(survivorErrors) > 0 {
		t.Errorf("%d requests to surviving replicas failed: %q", len(survivorErrors), describeAll(survivorErrors))
	}
	if v.invalid > 0 {
		t.Errorf("%d invalid tokens served: %q", v.invalid, v.problems)
	}
	// One call was cut short by the kill; exactly one more, by a survivor, completed the refresh.
	if calls != 2 {
		t.Errorf("%d upstream token calls since the refresh began, want 2 (the interrupted one and the takeover)", calls)
	}
	t.Logf("summary: served=%d survivor_errors=%d interrupted_on_killed=%d invalid=%d token_calls=%d (minimum 2; replacement warm-up: 0) lock_lapsed_after=%v takeover_after=%v token_left_at_takeover=%v",
		v.served, len(survivorErrors), interrupted, v.invalid, calls, lapsed.Sub(killed).Round(10*time.Millisecond),
		renewed.Sub(killed).Round(10*time.Millisecond), before.ExpiresAt.Sub(renewed).Round(10*time.Millisecond))
}

// gracefulShutdown: SIGTERM to the replica holding the refresh lock, under load: the requests in
// flight complete, the process exits 0, and its lock is released at once, not left to lapse.
func gracefulShutdown(t *testing.T, bins binaries) {
	c := startCluster(t, bins, lockSpec())
	c.waitReady()
	a := c.apps[0]
	before, base, l, holder := c.slowRefreshUnderLoad(a)
	owner := c.lockOwner(a)

	// A request in flight across the signal: its handler is running (it asked for the body with
	// "100 Continue") when the replica begins shutting down, and its body arrives only then. (A
	// report of a value that is not current: no upstream call.) A connection of its own: a request
	// sent on an idle keep-alive connection just as the server closes it is lost whoever the server is.
	pr, pw := io.Pipe()
	defer pw.Close()
	handling := make(chan struct{})
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{Got100Continue: func() { close(handling) }})
	own := &http.Client{Timeout: requestTimeout, Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: requestTimeout}}
	slow := make(chan sample, 1)
	go func() {
		slow <- c.send(ctx, own, http.Header{"Expect": {"100-continue"}}, holder, a.name, token.AccessToken,
			http.MethodPost, "/v1/apps/"+a.name+"/access_token/invalidate", pr)
	}()
	select {
	case <-handling:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow request's handler did not ask for its body")
	}

	holder.proc.signal(t, syscall.SIGTERM)
	termAt := time.Now()
	lctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := holder.proc.out.await(lctx, holder.proc.done, func(s string) bool { return strings.Contains(s, `"msg":"shutting down"`) }); err != nil {
		t.Fatalf("the replica did not log that it is shutting down: %v", err)
	}
	l.retire(holder.i)
	if _, err := io.WriteString(pw, `{"access_token":"not-the-current-token"}`); err != nil {
		t.Errorf("finishing the slow request's body: %v", err)
	}
	pw.Close()
	state := holder.proc.wait(t, 2*c.spec.timeout+15*time.Second)
	exited := time.Now()
	lockAfter, lockErr := c.redis.Do("GET", lockKey(a.name))
	cutShort := c.fake.current(t, a.clientID, token.AccessToken).ExpiresAt.Equal(before.ExpiresAt)

	if code := state.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if s := <-slow; !s.ok() {
		t.Errorf("the request in flight across SIGTERM did not complete: %s", s.describe())
	}
	// Its lock is gone (or already another replica's) the moment it has exited.
	if lockErr != nil || lockAfter == owner {
		t.Errorf("right after exit the lock is still the terminated replica's (err %v): it was left to lapse", lockErr)
	}

	renewed := eventually(t, time.Until(before.ExpiresAt), "a surviving replica renews the token before it expires", func() bool {
		return c.fake.current(t, a.clientID, token.AccessToken).ExpiresAt.After(before.ExpiresAt)
	})
	samples := l.stop()
	calls := c.tokenCalls()[a.name] - base
	v := check(samples, c.fake.issued(t), nil)
	toHolder := filter(samples, func(s sample) bool { return s.replica == holder.i })
	refused, broken := 0, 0
	for _, s := range toHolder {
		switch {
		case s.ok():
		case s.refused():
			refused++ // sent after the listener closed: never in flight
		default:
			broken++
			t.Errorf("a request to the terminating replica failed: %s", s.describe())
		}
	}
	if bad := failures(samples, func(s sample) bool { return s.replica != holder.i }); len(bad) > 0 {
		t.Errorf("%d requests to surviving replicas failed: %q", len(bad), describeAll(bad))
	}
	if v.invalid > 0 {
		t.Errorf("%d invalid tokens served: %q", v.invalid, v.problems)
	}
	t.Logf("summary: served=%d errors=%d (refused_after_close=%d broken_in_flight=%d) invalid=%d exit_status=%d exit_after=%v lock_released=%t holder_call_cut_short=%t token_calls=%d (minimum 1) takeover_after_exit=%v",
		v.served, v.errors, refused, broken, v.invalid, state.ExitCode(), exited.Sub(termAt).Round(10*time.Millisecond),
		lockErr == nil && lockAfter != owner, cutShort, calls, renewed.Sub(exited).Round(10*time.Millisecond))
}

// storedRecord returns the generation and expiry (Unix ms) of app's access token in Redis.
func (c *cluster) storedRecord(app string) (gen, expMs int64, err error) {
	key := "tokend:{" + app + "}:" + string(token.AccessToken)
	g, err := c.redis.Do("HGET", key, "generation")
	if err != nil {
		return 0, 0, err
	}
	e, err := c.redis.Do("HGET", key, "expires_ms")
	if err != nil {
		return 0, 0, err
	}
	if gen, err = strconv.ParseInt(g, 10, 64); err != nil {
		return 0, 0, err
	}
	expMs, err = strconv.ParseInt(e, 10, 64)
	return gen, expMs, err
}

// frozenLockHolder: the replica holding the refresh lock freezes (SIGSTOP) mid-call, long enough for
// its lock to lapse and a survivor to refresh; then it resumes (SIGCONT) and finishes its stale
// refresh. Its write is fenced off: what Redis holds never moves backwards, and the resumed replica
// ends up serving the survivor's token.
func frozenLockHolder(t *testing.T, bins binaries) {
	c := startCluster(t, bins, lockSpec())
	c.waitReady()
	a := c.apps[0]
	gen0, _, err := c.storedRecord(a.name)
	if err != nil {
		t.Fatal(err)
	}
	before, base, l, holder := c.slowRefreshUnderLoad(a)
	l.retire(holder.i)
	holder.proc.signal(t, syscall.SIGSTOP)
	stopped := time.Now()

	// (The frozen replica's own call completes at DingTalk, which renews the token: only the next
	// call can be a survivor's.)
	takeover := eventually(t, lockLapse+2*lockLatency+2*time.Second, "a surviving replica calls DingTalk once the frozen holder's lock lapses", func() bool {
		return c.tokenCalls()[a.name] > base+1
	})
	var gen1, exp1 int64
	renewed := eventually(t, time.Until(before.ExpiresAt), "Redis holds the survivor's token before the old one expires", func() bool {
		gen1, exp1, err = c.storedRecord(a.name)
		return err == nil && gen1 > gen0
	})

	holder.proc.signal(t, syscall.SIGCONT)
	resumed := time.Now()
	// Watch Redis while the resumed replica finishes what it was doing: its stale token (fetched
	// before the survivor's, so expiring earlier) must never replace the survivor's.
	regressions := 0
	converged := eventuallyWhy(t, 10*time.Second, "the resumed replica serves the survivor's token", func() (bool, string) {
		gen, exp, err := c.storedRecord(a.name)
		if err != nil {
			return false, err.Error()
		}
		if gen < gen1 || exp < exp1 {
			regressions++
			return false, fmt.Sprintf("Redis went back from generation %d expiring %d to generation %d expiring %d", gen1, exp1, gen, exp)
		}
		if got := c.expiryMs(holder, a.name); got != exp {
			return false, fmt.Sprintf("the resumed replica serves expiry %d, Redis holds %d", got, exp)
		}
		return true, ""
	})
	for range 20 { // and a little longer, in case the stale write comes late
		if gen, exp, err := c.storedRecord(a.name); err == nil && (gen < gen1 || exp < exp1) {
			regressions++
		}
		waitUntil(t, time.Now().Add(50*time.Millisecond))
	}
	if regressions > 0 {
		t.Errorf("the resumed replica's stale write moved Redis's record backwards (%d observations)", regressions)
	}
	// Whether the resumed replica still shows the app failing depends on which of its goroutines
	// ran first on resuming; late_failure_after_takeover tests that case deterministically.
	_, body, err := c.readyz(holder)
	if err != nil {
		t.Fatal(err)
	}
	resumedState, _ := body.app(a.name)
	samples := l.stop()
	calls := c.tokenCalls()[a.name] - base
	lines, _ := holder.proc.out.snapshot()
	fenced, failed := 0, 0
	for _, line := range lines {
		switch {
		case strings.Contains(line, "fenced write lost"):
			fenced++
		case strings.Contains(line, `"msg":"refresh failed"`):
			failed++
		}
	}

	v := check(samples, c.fake.issued(t), nil)
	if bad := failures(samples, func(s sample) bool { return s.replica != holder.i }); len(bad) > 0 {
		t.Errorf("%d requests to the other replicas failed: %q", len(bad), describeAll(bad))
	}
	if bad := failures(samples, func(s sample) bool { return s.replica == holder.i }); len(bad) > 0 {
		t.Errorf("%d requests held by the frozen replica failed after it resumed: %q", len(bad), describeAll(bad))
	}
	if v.invalid > 0 {
		t.Errorf("%d invalid tokens served: %q", v.invalid, v.problems)
	}
	t.Logf("summary: served=%d errors=%d invalid=%d frozen_for=%v takeover_call_after=%v stored_after=%v token_calls=%d (minimum 2) stale_refresh_outcome: fenced_writes_lost=%d refresh_failed=%d redis_regressions=%d converged_after_resume=%v resumed_readyz=%s/%s",
		v.served, v.errors, v.invalid, resumed.Sub(stopped).Round(10*time.Millisecond), takeover.Sub(stopped).Round(10*time.Millisecond), renewed.Sub(stopped).Round(10*time.Millisecond),
		calls, fenced, failed, regressions, converged.Sub(resumed).Round(10*time.Millisecond), resumedState.State, resumedState.UpstreamCode)
}

// lateFailure: a replica's DingTalk call fails after another replica has already refreshed the token,
// because its lock lapsed while its call hung (as after a stall longer than the lock's life; the suite
// deletes the lock to make the lapse immediate). The replica adopts the other's token, and its late
// failure must not leave it reporting the app as failing while it serves that fresh token.
func lateFailure(t *testing.T, bins binaries) {
	s := spec{replicas: 2, apps: 1, tokenTTL: time.Minute, margin: 10 * time.Second, timeout: 2 * time.Second, retry: 2 * time.Second}
	c := startCluster(t, bins, s)
	c.waitReady()
	a := c.apps[0]
	slow, other := c.replicas[0], c.replicas[1]
	cur := c.current(slow, a.name)
	expBefore := c.expiryMs(slow, a.name)
	base := c.tokenCalls()[a.name]

	// A client reports the current token to one replica: it takes the lock, and its call hangs.
	c.fake.fault(t, "", fakedingtalk.Fault{Mode: fakedingtalk.FaultHang, Endpoint: fakedingtalk.EndpointToken})
	hung := make(chan sample, 1)
	go func() { hung <- c.invalidate(t.Context(), slow, a.name, cur.value) }()
	eventually(t, 5*time.Second, "the first replica's call reaches DingTalk", func() bool { return c.tokenCalls()[a.name] > base })
	c.fake.clearFaults(t)
	if _, err := c.redis.Do("DEL", lockKey(a.name)); err != nil {
		t.Fatal(err)
	}
	// The same report to the other replica: it takes the free lock and refreshes.
	took := c.invalidate(t.Context(), other, a.name, cur.value)
	if !took.ok() {
		t.Fatalf("the other replica's refresh: %s", took.describe())
	}
	eventually(t, time.Second, "the first replica adopts the other's token", func() bool { return c.expiryMs(slow, a.name) > expBefore })
	select {
	case r := <-hung:
		t.Fatalf("the hung call ended before the other replica's token was adopted (%s): the scenario did not happen", r.describe())
	default:
	}
	first := <-hung // the hung call times out (upstream.timeout) and is recorded as a failure
	failedAt := time.Now()

	// It serves a valid token, fresh from the other replica: the app is not failing there.
	var state readyzStatus
	okAt, recovered := time.Time{}, false
	deadline := failedAt.Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_, body, err := c.readyz(slow)
		if err != nil {
			t.Fatal(err)
		}
		state, _ = body.app(a.name)
		if state.State == "ok" {
			okAt, recovered = time.Now(), true
			break
		}
		waitUntil(t, time.Now().Add(50*time.Millisecond))
	}
	served := c.current(slow, a.name)
	if !recovered {
		t.Errorf("%v after its late failure, the replica still shows %s as %q (upstream_code %q) while serving a valid token refreshed by another replica "+
			"(expires in %v): a late failure marks the entry failing after the newer record was adopted, and the refresh that then finds the store fresh "+
			"returns as shared without clearing it",
			time.Since(failedAt).Round(100*time.Millisecond), a.name, state.State, state.UpstreamCode, time.Until(served.expiresAt).Round(time.Second))
	}
	v := check([]sample{served, took}, c.fake.issued(t), nil)
	if v.invalid > 0 {
		t.Errorf("invalid tokens served: %q", v.problems)
	}
	after := "never"
	if recovered {
		after = okAt.Sub(failedAt).Round(10 * time.Millisecond).String()
	}
	t.Logf("summary: token_calls=%d (the hung one and the other's) hung_report=%d %s other_report=%d shows_ok_after_late_failure=%s",
		c.tokenCalls()[a.name]-base, first.status, first.code, took.status, after)
}
