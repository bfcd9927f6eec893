package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// propagation is how soon every replica must serve a token another replica replaced (README: "within
// a second through Redis pub/sub").
const propagation = time.Second

// revocation: DingTalk revokes a token early. A client reports it to one replica, which replaces it;
// every replica serves the new token within a second. Reports of the same token to all replicas at
// once cost one upstream call, and every reporter gets the new token; a late report of the old token
// costs none.
func revocation(t *testing.T, bins binaries) {
	s := spec{replicas: 3, apps: 2, tokenTTL: time.Minute, margin: 10 * time.Second, timeout: 2 * time.Second, retry: 2 * time.Second}
	c := startCluster(t, bins, s)
	c.waitReady()
	l := c.startLoad(15, 50*time.Millisecond, c.appNames(), 2*time.Minute)
	eventually(t, 5*time.Second, "the load under way", func() bool { return l.count() > 100 })

	// replaced[app] is when every replica must serve the new token; revoked[app] the old value.
	replaced := map[string]time.Time{}
	revoked := map[string]string{}
	var spread []time.Duration

	// awaitEverywhere waits until every replica serves app's token value and returns how long after
	// since that took.
	awaitEverywhere := func(app, value string, since time.Time) time.Duration {
		var last time.Time
		for _, r := range c.replicas {
			at := eventually(t, 5*time.Second, "every replica serves the new token", func() bool {
				s := c.credential(t.Context(), r, app, token.AccessToken)
				return s.ok() && s.value == value
			})
			if at.After(last) {
				last = at
			}
		}
		d := last.Sub(since)
		if d > propagation {
			t.Errorf("%s: the last replica served the new token %v after the report was answered, want within %v", app, d.Round(time.Millisecond), propagation)
		}
		return d
	}

	// One report, to one replica.
	a := c.apps[0]
	old := c.current(c.replicas[0], a.name).value
	before := c.tokenCalls()[a.name]
	if !c.fake.revoke(t, old) {
		t.Fatalf("the fake did not revoke %s's token", a.name)
	}
	rep := c.invalidate(t.Context(), c.replicas[1], a.name, old)
	if !rep.ok() || rep.value == old {
		t.Fatalf("report of a revoked token: %s, want 200 with a new token", rep.describe())
	}
	replaced[a.name], revoked[a.name] = rep.end.Add(propagation), old
	spread = append(spread, awaitEverywhere(a.name, rep.value, rep.end))
	oneCalls := c.tokenCalls()[a.name] - before
	if oneCalls != 1 {
		t.Errorf("%s: %d upstream calls for one report, want 1", a.name, oneCalls)
	}
	// A late report of the old token: the current one comes back, DingTalk is not called.
	late := c.invalidate(t.Context(), c.replicas[2], a.name, old)
	if !late.ok() || late.value != rep.value {
		t.Errorf("late report of the replaced token: %s, want 200 with the current token", late.describe())
	}
	if n := c.tokenCalls()[a.name] - before; n != oneCalls {
		t.Errorf("%s: a report of an old token cost an upstream call", a.name)
	}

	// The same token reported to every replica at once.
	b := c.apps[1]
	oldB := c.current(c.replicas[0], b.name).value
	beforeB := c.tokenCalls()[b.name]
	if !c.fake.revoke(t, oldB) {
		t.Fatalf("the fake did not revoke %s's token", b.name)
	}
	reports := make([]sample, len(c.replicas))
	var wg sync.WaitGroup
	for i, r := range c.replicas {
		wg.Go(func() { reports[i] = c.invalidate(t.Context(), r, b.name, oldB) })
	}
	wg.Wait()
	var lastReport time.Time
	for _, r := range reports {
		if !r.ok() || r.value == oldB || r.value != reports[0].value {
			t.Errorf("concurrent report: %s, want 200 with the one new token", r.describe())
		}
		if r.end.After(lastReport) {
			lastReport = r.end
		}
	}
	replaced[b.name], revoked[b.name] = lastReport.Add(propagation), oldB
	spread = append(spread, awaitEverywhere(b.name, reports[0].value, lastReport))
	concurrentCalls := c.tokenCalls()[b.name] - beforeB
	if concurrentCalls != 1 {
		t.Errorf("%s: %d upstream calls for %d concurrent reports, want 1", b.name, concurrentCalls, len(reports))
	}
	// Load after the replacement reached everyone, for the check below.
	waitUntil(t, replaced[b.name])
	n := l.count()
	eventually(t, 5*time.Second, "load after the replacement", func() bool { return l.count() > n+100 })
	samples := l.stop()

	// A revoked token may still be served between the revocation and the replacement reaching every
	// replica: nobody can know before a client reports it. After that, never.
	v := check(samples, c.fake.issued(t), func(s sample) bool {
		return s.value == revoked[s.app] && s.end.Before(replaced[s.app])
	})
	if v.errors > 0 || v.invalid > 0 {
		t.Errorf("%d failed requests, %d invalid tokens served: %q %q", v.errors, v.invalid, describeAll(failures(samples, nil)), v.problems)
	}
	t.Logf("summary: served=%d errors=%d invalid=%d revoked_served_before_replacement=%d one_report_calls=%d concurrent_reports=%d calls=%d (minimum 1 each) late_report_calls=0 propagation=%v (limit %v)",
		v.served, v.errors, v.invalid, v.excused, oneCalls, len(reports), concurrentCalls, spread, propagation)
}
