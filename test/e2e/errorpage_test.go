package e2e

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
)

// TestProxyErrorPage: a proxy between tokend and DingTalk answers one app's token call with an
// ordinary 502 HTML error page whose markup says "block" (CSS display:block), "forbidden" and
// "denied". That is a retryable failure of that app, not DingTalk's per-IP block: the other apps keep
// being fetched from DingTalk on every replica, and the app itself is fetched again as soon as the
// page goes away, not five minutes later.
func TestProxyErrorPage(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	requireProcesses(t, "the error page test runs real processes", "redis-server")
	bins := build(t)
	s := spec{replicas: 2, apps: 3, tokenTTL: 2 * time.Minute, margin: 10 * time.Second, timeout: 2 * time.Second, retry: 2 * time.Second}
	c := startCluster(t, bins, s)
	c.waitReady()
	page, other, another := c.apps[0], c.apps[1], c.apps[2]

	// replace revokes app's token at the fake and reports it to replica r, which must call DingTalk
	// once. It returns the revoked value and the answer to the report.
	replace := func(r *replica, a app) (string, sample) {
		t.Helper()
		old := c.current(r, a.name).value
		before := c.tokenCalls()[a.name]
		if !c.fake.revoke(t, old) {
			t.Fatalf("the fake did not revoke %s's token", a.name)
		}
		rep := c.invalidate(t.Context(), r, a.name, old)
		if n := c.tokenCalls()[a.name] - before; n != 1 {
			t.Errorf("%s on replica %d: %d upstream calls for one report, want 1", a.name, r.i, n)
		}
		return old, rep
	}

	c.fake.fault(t, page.clientID, fakedingtalk.Fault{Mode: fakedingtalk.FaultErrorPage, Endpoint: fakedingtalk.EndpointToken})
	revoked, met := replace(c.replicas[0], page)
	if met.status != http.StatusServiceUnavailable || met.code != "upstream_unavailable" || met.upstreamCode != "http_502" {
		t.Errorf("the refresh that met the error page: %s, want 503 upstream_unavailable with upstream_code http_502", met.describe())
	}
	if ra, err := strconv.Atoi(met.retryAfter); err != nil || ra >= 240 {
		t.Errorf("Retry-After %q after an error page, want a short back-off, not a ban's 5 minutes", met.retryAfter)
	}

	// Other apps, on the replica that met the page and on another: DingTalk is called and answers.
	for _, r := range []struct {
		r *replica
		a app
	}{{c.replicas[0], other}, {c.replicas[1], another}} {
		if _, got := replace(r.r, r.a); !got.ok() {
			t.Errorf("another app's refresh after the error page: %s, want 200 with a new token", got.describe())
		}
	}

	// The page goes away: the app is fetched again after its short back-off.
	c.fake.clearFaults(t)
	cleared := time.Now()
	var last sample
	eventuallyWhy(t, 3*s.retry+5*time.Second, page.name+" refreshed once the error page is gone", func() (bool, string) {
		last = c.invalidate(t.Context(), c.replicas[1], page.name, revoked)
		return last.ok() && last.value != revoked, last.describe()
	})
	t.Logf("summary: error page answered %d %s/%s retry_after=%ss; other apps refreshed on both replicas; %s refreshed %v after the page went away",
		met.status, met.code, met.upstreamCode, met.retryAfter, page.name, last.end.Sub(cleared).Round(time.Millisecond))
}
