package e2e

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/token"
)

// TestBrokerFailures runs the broker's failure cases that need real processes: a Redis that loses
// the record while a replica fetches, and a lock holder shut down mid-refresh. Each scenario has its
// own fake DingTalk, Redis and replicas, like TestChaos's.
func TestBrokerFailures(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	requireProcesses(t, "the broker failure cases run real processes", "redis-server")
	bins := build(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, binaries)
	}{
		{"record_lost_mid_refresh", recordLostMidRefresh},
		{"holder_sigterm_waiter_takes_over", holderShutdownWaiterTakesOver},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, bins) })
	}
}

// recordLostMidRefresh: Redis loses everything (FLUSHALL, as a restart without persistence would)
// while the replica holding the refresh lock is inside its DingTalk call. The client that asked gets
// the fetched token, never a 200 with an empty one; Redis holds it again as generation 1; the other
// replica serves it too.
func recordLostMidRefresh(t *testing.T, bins binaries) {
	c := startCluster(t, bins, spec{replicas: 2, apps: 1, tokenTTL: time.Minute, margin: 10 * time.Second,
		timeout: 5 * time.Second, retry: 2 * time.Second})
	c.waitReady()
	a := c.apps[0]
	holder, other := c.replicas[0], c.replicas[1]
	old := c.current(holder, a.name).value
	if !c.fake.revoke(t, old) {
		t.Fatal("the fake did not revoke the token")
	}
	c.fake.fault(t, "", fakedingtalk.Fault{Latency: 2 * time.Second, Endpoint: fakedingtalk.EndpointToken})
	base := c.tokenCalls()[a.name]
	res := make(chan sample, 1)
	go func() { res <- c.invalidate(t.Context(), holder, a.name, old) }()
	eventually(t, 5*time.Second, "the holder's call reaches DingTalk", func() bool { return c.tokenCalls()[a.name] > base })
	if _, err := c.redis.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	got := <-res
	c.fake.clearFaults(t)
	if !got.ok() || got.value == old {
		t.Fatalf("the report answered during the loss: %s, want 200 with a new token", got.describe())
	}
	want := c.fake.current(t, a.clientID, token.AccessToken)
	if got.value != want.Value {
		t.Fatalf("served %s, DingTalk's current token is %s", got.describe(), token.Fingerprint(want.Value))
	}
	gen, expMs, err := c.storedRecord(a.name)
	if err != nil {
		t.Fatalf("Redis holds no record after the refresh: %v", err)
	}
	if gen != 1 || expMs/1000 != got.expiresAt.Unix() {
		t.Errorf("Redis holds generation %d expiring at %d, want generation 1 expiring at %d s (the served token)", gen, expMs, got.expiresAt.Unix())
	}
	eventually(t, 5*time.Second, "the other replica serves the new token", func() bool {
		s := c.credential(t.Context(), other, a.name, token.AccessToken)
		return s.ok() && s.value == got.value
	})
	if n := c.tokenCalls()[a.name] - base; n != 1 {
		t.Errorf("%d token calls, want 1", n)
	}
	t.Logf("summary: status=%d generation=%d token_calls=%s", got.status, gen, strconv.Itoa(c.tokenCalls()[a.name]-base))
}

// holderShutdownWaiterTakesOver: at a cold start, the replica holding the refresh lock gets SIGTERM
// while its DingTalk call is in flight and a client waits on the other replica. The cancelled call is
// not DingTalk's failure: no shared back-off note is written, no failure is audited, and the waiting
// replica takes the refresh over and answers its client 200.
func holderShutdownWaiterTakesOver(t *testing.T, bins binaries) {
	c := startCluster(t, bins, spec{replicas: 2, apps: 1, tokenTTL: time.Minute, margin: 10 * time.Second,
		timeout: 10 * time.Second, retry: 2 * time.Second,
		initial: fakedingtalk.Fault{Latency: 5 * time.Second, Endpoint: fakedingtalk.EndpointToken}})
	a := c.apps[0]
	holder := c.lockHolder(a, 0, make([]float64, len(c.replicas)), 10*time.Second)
	waiter := c.replicas[0]
	if waiter == holder {
		waiter = c.replicas[1]
	}
	eventually(t, 5*time.Second, "the other replica waits on the lock", func() bool {
		return c.metric(waiter, "tokend_lock_acquisitions_total", map[string]string{"result": "contended"}) >= 1
	})
	res := make(chan sample, 1)
	go func() { res <- c.credential(t.Context(), waiter, a.name, token.AccessToken) }()

	holder.proc.signal(t, syscall.SIGTERM)
	termAt := time.Now()
	state := holder.proc.wait(t, 15*time.Second)
	c.fake.clearFaults(t)
	got := <-res
	if !got.ok() {
		t.Fatalf("the waiting replica's client: %s, want 200", got.describe())
	}
	if code := state.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	note, err := c.redis.Do("GET", "tokend:note:backoff:"+a.name+":"+string(token.AccessToken))
	if err == nil && note != "" {
		t.Errorf("the terminated holder left a back-off note: its own cancelled call was recorded as DingTalk's failure")
	}
	lines, _ := holder.proc.out.snapshot()
	for _, l := range lines {
		if strings.Contains(l, `"msg":"refresh failed"`) || (strings.Contains(l, `"event":"refresh"`) && strings.Contains(l, `"result":"failure"`)) {
			t.Errorf("the terminated holder recorded a failure: %s", l)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if s := c.credential(ctx, waiter, a.name, token.AccessToken); !s.ok() || s.value != got.value {
		t.Errorf("the waiter then serves %s", s.describe())
	}
	t.Logf("summary: waiter_status=%d answered_after_sigterm=%v token_calls=%d", got.status,
		got.end.Sub(termAt).Round(10*time.Millisecond), c.tokenCalls()[a.name])
}
