package e2e

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// expiryMs returns the expiry replica r serves for app's access token, in Unix milliseconds, from its
// tokend_token_expiry_timestamp_seconds gauge.
func (c *cluster) expiryMs(r *replica, app string) int64 {
	return c.expiries(r)[app]
}

// expiries returns the expiry replica r serves for every app's access token, in Unix milliseconds,
// from one scrape of its metrics.
func (c *cluster) expiries(r *replica) map[string]int64 {
	c.t.Helper()
	text, err := c.metrics(r)
	if err != nil {
		c.t.Fatalf("replica %d: %v", r.i, err)
	}
	out := map[string]int64{}
	for _, a := range c.apps {
		v := metricValue(text, "tokend_token_expiry_timestamp_seconds", map[string]string{"app": a.name, "kind": string(token.AccessToken)})
		out[a.name] = int64(math.Round(v * 1000))
	}
	return out
}

// converged reports whether every replica serves the one record Redis holds for every app: the same
// value and the same expiry. why says what differs.
func (c *cluster) converged() (ok bool, why string) {
	exp := map[int]map[string]int64{}
	for _, r := range c.replicas {
		exp[r.i] = c.expiries(r)
	}
	for _, a := range c.apps {
		key := "tokend:{" + a.name + "}:" + string(token.AccessToken)
		stored, err := c.redis.Do("HGET", key, "value")
		if err != nil || stored == "" {
			return false, fmt.Sprintf("Redis holds no token for %s (err %v)", a.name, err)
		}
		raw, err := c.redis.Do("HGET", key, "expires_ms")
		storedExp, perr := strconv.ParseInt(raw, 10, 64)
		if err != nil || perr != nil {
			return false, fmt.Sprintf("Redis holds no expiry for %s", a.name)
		}
		for _, r := range c.replicas {
			s := c.credential(c.t.Context(), r, a.name, token.AccessToken)
			if !s.ok() {
				return false, fmt.Sprintf("replica %d: %s", r.i, s.describe())
			}
			if s.value != stored {
				return false, fmt.Sprintf("replica %d serves another %s token than Redis holds", r.i, a.name)
			}
			if got := exp[r.i][a.name]; got != storedExp {
				return false, fmt.Sprintf("replica %d serves %s's token with expiry %d, Redis holds %d", r.i, a.name, got, storedExp)
			}
		}
	}
	return true, ""
}

// awaitRefreshEverywhere waits until every replica serves a later expiry for every app than when it
// was called.
func (c *cluster) awaitRefreshEverywhere(what string, timeout time.Duration) {
	c.t.Helper()
	before := map[int]map[string]int64{}
	for _, r := range c.replicas {
		before[r.i] = c.expiries(r)
	}
	eventuallyWhy(c.t, timeout, what, func() (bool, string) {
		for _, r := range c.replicas {
			now := c.expiries(r)
			for _, a := range c.apps {
				if now[a.name] <= before[r.i][a.name] {
					return false, fmt.Sprintf("replica %d still serves %s's token expiring at %d", r.i, a.name, before[r.i][a.name])
				}
			}
		}
		return true, ""
	})
}

// redisOutage: Redis is killed (or frozen, with SIGSTOP) for longer than a refresh cycle. Clients get
// every token from memory, each replica refreshes on its own, no request fails or hangs; once Redis is
// back (restarted empty, or thawed), the replicas converge on one token per app and refresh as one
// again.
func redisOutage(t *testing.T, bins binaries, freeze bool) {
	s := spec{replicas: 3, apps: 2, tokenTTL: 8 * time.Second, margin: 3 * time.Second, timeout: 2 * time.Second, retry: 2 * time.Second}
	c := startCluster(t, bins, s)
	c.waitReady()
	cycle := s.tokenTTL - s.margin
	// A frozen Redis answers nothing: every store operation of tokend gives up after 1 s, so no client
	// request may take much longer than that. A dead one refuses connections at once.
	maxLat := 2 * time.Second
	l := c.startLoad(15, 50*time.Millisecond, c.appNames(), 2*time.Minute)
	eventually(t, 5*time.Second, "the load under way", func() bool { return l.count() > 100 })

	// successes returns replica r's store_up gauge and its successful refreshes of each app.
	successes := func(r *replica) (up float64, ok map[string]float64) {
		text, err := c.metrics(r)
		if err != nil {
			t.Fatalf("replica %d: %v", r.i, err)
		}
		ok = map[string]float64{}
		for _, a := range c.apps {
			ok[a.name] = metricValue(text, "tokend_refresh_total", map[string]string{"app": a.name, "kind": string(token.AccessToken), "result": "success"})
		}
		return metricValue(text, "tokend_store_up", nil), ok
	}
	before := map[int]map[string]float64{}
	for _, r := range c.replicas {
		_, before[r.i] = successes(r)
	}
	callsBefore := c.tokenCalls()
	outage := "killed"
	if freeze {
		outage = "frozen"
		c.redis.Freeze()
	} else {
		c.redis.Kill()
	}
	down := time.Now()
	// The outage lasts until every replica has refreshed every app on its own, and knows the store
	// is down: longer than a refresh cycle by construction.
	eventually(t, 3*cycle, "every replica refreshes every app alone while Redis is "+outage, func() bool {
		for _, r := range c.replicas {
			up, now := successes(r)
			if up != 0 {
				return false
			}
			for _, a := range c.apps {
				if now[a.name] <= before[r.i][a.name] {
					return false
				}
			}
		}
		return true
	})
	// A request that would use the store (a report of the current token) is answered too, from
	// this replica alone.
	report := c.invalidate(t.Context(), c.replicas[0], c.apps[0].name, c.current(c.replicas[0], c.apps[0].name).value)
	if !report.ok() || report.latency() > maxLat {
		t.Errorf("a report while Redis was %s: %s, want 200 within %v", outage, report.describe(), maxLat)
	}
	outageCalls := c.tokenCalls()
	if freeze {
		c.redis.Thaw()
	} else {
		c.redis.Restart()
	}
	back := time.Now()
	// Locks in Redis right after its return: none should be held (nobody is refreshing), unless a
	// lock request that timed out in a replica while Redis was frozen took effect on the thaw.
	var ghosts []string
	for _, a := range c.apps {
		if ttl, err := c.redis.Do("PTTL", lockKey(a.name)); err == nil && ttl != "-2" {
			ghosts = append(ghosts, a.name+":"+ttl+"ms")
		}
	}

	eventually(t, 10*time.Second, "every replica sees the store again", func() bool {
		for _, r := range c.replicas {
			code, body, err := c.readyz(r)
			if err != nil || code != http.StatusOK || body.Store != "ok" {
				return false
			}
		}
		return true
	})
	converged := eventuallyWhy(t, 10*time.Second, "the replicas converge on Redis's token", c.converged)

	// Behaving as one again: a refresh cycle costs one call per app, and reaches every replica. The
	// cycle measured starts after a refresh (so that no call is in flight across the snapshot).
	c.awaitRefreshEverywhere("the first refresh after convergence reaches every replica", 2*cycle)
	settled, settledAt := c.tokenCalls(), time.Now()
	c.awaitRefreshEverywhere("the next refresh reaches every replica", 2*cycle)
	after := c.tokenCalls()
	samples := l.stop()

	v := check(samples, c.fake.issued(t), nil)
	if v.errors > 0 || v.invalid > 0 {
		t.Errorf("%d failed requests, %d invalid tokens served: %q %q", v.errors, v.invalid, describeAll(failures(samples, nil)), v.problems)
	}
	stalled, slow := l.slow(samples, maxLat)
	if len(slow) > 0 {
		t.Errorf("%d client requests took longer than %v while Redis was %s (their replica's /healthz answered promptly meanwhile): %q",
			len(slow), maxLat, outage, describeAll(slow))
	}
	var during, next []int
	blips := c.storeBlips(settledAt) // Redis slower than 1 s on a loaded machine: see storeBlips
	for _, a := range c.apps {
		during = append(during, outageCalls[a.name]-callsBefore[a.name])
		n := after[a.name] - settled[a.name]
		next = append(next, n)
		if n < 1 || n > 1+blips {
			t.Errorf("%s: a refresh cycle after Redis returned cost %d upstream calls, want 1 (and %d for Redis blips)", a.name, n, blips)
		}
	}
	t.Logf("summary: redis %s for %v: served=%d errors=%d invalid=%d max_latency=%v (slow: %d, explained by a stalled process: %d) calls_during_outage_per_app=%v (each replica alone: at least %d) calls_per_cycle_after_per_app=%v (minimum 1) report_latency=%v locks_at_return=%v converged_after=%v",
		outage, back.Sub(down).Round(100*time.Millisecond), v.served, v.errors, v.invalid, v.maxLat.Round(time.Millisecond), len(slow), len(stalled),
		during, len(c.replicas), next, report.latency().Round(time.Millisecond), ghosts, converged.Sub(back).Round(10*time.Millisecond))
}
