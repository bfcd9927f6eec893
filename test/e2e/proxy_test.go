package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/token"
)

// TestProxy runs the proxy as it runs in production: real tokend processes sharing a real Redis in
// front of the fake DingTalk, whose API endpoints validate the tokens they are given.
func TestProxy(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	requireProcesses(t, "the proxy suite runs real processes", "redis-server")
	bins := build(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, binaries)
	}{
		{"revocation", proxyRevocation},
		{"streams", proxyStreams},
		{"budget", proxyBudget},
		{"ban", proxyBan},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, bins) })
	}
}

// proxySpec is a cluster whose client may proxy every call of app0, with a gateway listener.
func proxySpec(replicas int) spec {
	return spec{replicas: replicas, apps: 1, tokenTTL: time.Hour, margin: 10 * time.Minute, timeout: 5 * time.Second,
		retry:      2 * time.Second,
		clientYAML: "    proxy:\n      app0: [\"* api:/**\", \"* oapi:/**\"]\n",
		extraYAML:  "gateway_listen: 127.0.0.1:0\nproxy:\n  timeout: 20s\n  max_body: 20MiB\n"}
}

// answer is one proxied call's outcome.
type answer struct {
	status     int
	ctype      string
	retryAfter string
	body       []byte
	err        error
}

func (a answer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	body := a.body
	if len(body) > 300 {
		body = body[:300]
	}
	return fmt.Sprintf("%d %s %s", a.status, a.ctype, body)
}

// doc decodes a JSON answer.
func (a answer) doc() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(a.body, &m)
	return m
}

// proxied sends one request to base+path (a replica's client API or gateway) with the client key,
// unless hdr already carries credentials.
func (c *cluster) proxied(ctx context.Context, method, url string, hdr http.Header, body io.Reader) answer {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return answer{err: err}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if req.Header.Get("Authorization") == "" && req.URL.User == nil {
		req.Header.Set("Authorization", "Bearer "+c.clientKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), retryAfter: resp.Header.Get("Retry-After"), body: raw, err: err}
}

// userGet is a legacy /topapi call (oapi) through r's proxy route.
func (c *cluster) userGet(ctx context.Context, r *replica, userID string) answer {
	return c.proxied(ctx, http.MethodPost, r.api+"/v1/apps/app0/proxy/oapi/topapi/v2/user/get",
		http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"userid":"`+userID+`"}`))
}

// contactUser is a new-API call (api) through r's proxy route.
func (c *cluster) contactUser(ctx context.Context, r *replica, id string) answer {
	return c.proxied(ctx, http.MethodGet, r.api+"/v1/apps/app0/proxy/api/v1.0/contact/users/"+id, nil, nil)
}

// succeeded reports whether a is DingTalk's success answer to userGet or contactUser.
func succeeded(a answer) bool {
	d := a.doc()
	return a.err == nil && a.status == http.StatusOK && !strings.Contains(a.ctype, "problem") &&
		(d["errcode"] == float64(0) || d["unionId"] != nil)
}

// proxyRevocation: DingTalk revokes the app's token while every replica holds it. 30 concurrent
// proxied calls on 3 replicas, of both families, all meet the revoked token: they cost one token call
// in total, and every caller gets DingTalk's success answer.
func proxyRevocation(t *testing.T, bins binaries) {
	c := startCluster(t, bins, proxySpec(3))
	c.waitReady()
	a := c.apps[0]
	for _, r := range c.replicas {
		if got := c.userGet(t.Context(), r, "warm"); !succeeded(got) {
			t.Fatalf("replica %d: proxied call before the revocation: %s", r.i, got)
		}
	}
	old := c.current(c.replicas[0], a.name).value
	before := c.fake.calls(t)[a.clientID]
	if !c.fake.revoke(t, old) {
		t.Fatal("the fake did not revoke the token")
	}

	const n = 30
	// DingTalk holds every first call until all n have arrived, so that every one of them met the
	// revoked token (none started after its replica had the new one); the retries are not held.
	c.fake.fault(t, a.clientID, fakedingtalk.Fault{Latency: 3 * time.Second, Endpoint: fakedingtalk.EndpointAPI})
	answers := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			r := c.replicas[i%len(c.replicas)]
			if i%2 == 0 {
				answers[i] = c.userGet(t.Context(), r, fmt.Sprint("u", i))
			} else {
				answers[i] = c.contactUser(t.Context(), r, fmt.Sprint("u", i))
			}
		})
	}
	close(start)
	eventually(t, 10*time.Second, "every call held by DingTalk", func() bool {
		return c.fake.calls(t)[a.clientID].API >= before.API+n
	})
	c.fake.clearFaults(t)
	wg.Wait()
	failed := 0
	for i, ans := range answers {
		if !succeeded(ans) {
			failed++
			t.Errorf("call %d (replica %d): %s", i, i%len(c.replicas), ans)
		}
	}
	after := c.fake.calls(t)[a.clientID]
	if got := after.Token - before.Token; got != 1 {
		t.Errorf("%d token calls for one revocation seen by %d proxied calls, want 1", got, n)
	}
	var retries float64
	for _, r := range c.replicas {
		retries += c.metric(r, "tokend_proxy_retries_total", map[string]string{"app": a.name})
	}
	// Each call met the revoked token and was retried once.
	if retries != n || after.API-before.API != 2*n {
		t.Errorf("%v retries and %d API calls at DingTalk for %d proxied calls", retries, after.API-before.API, n)
	}
	audited := 0
	for _, r := range c.replicas {
		lines, _ := r.proc.out.snapshot()
		for _, l := range lines {
			if strings.Contains(l, `"event":"proxy"`) && strings.Contains(l, `"retried":true`) && strings.Contains(l, `"client":"chaos"`) {
				audited++
			}
		}
	}
	if audited != int(retries) {
		t.Errorf("%d audit lines of retried proxy calls, want %v", audited, retries)
	}
	t.Logf("summary: calls=%d failed=%d token_calls=%d retries=%v dingtalk_api_calls=%d", n, failed, after.Token-before.Token, retries, after.API-before.API)
}

// proxyStreams: a 15 MiB upload arrives byte-exact (through the proxy route and the gateway), and a
// caller that disconnects cancels its DingTalk request.
func proxyStreams(t *testing.T, bins binaries) {
	c := startCluster(t, bins, proxySpec(3))
	c.waitReady()
	a := c.apps[0]

	body := make([]byte, 15<<20)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	check := func(what string, ans answer) {
		d := ans.doc()
		if ans.err != nil || ans.status != http.StatusOK || d["sha256"] != want || d["size"] != float64(len(body)) {
			t.Errorf("%s: %s, want sha256 %s of %d bytes", what, ans, want, len(body))
		}
	}
	check("15 MiB upload through the proxy route", c.proxied(t.Context(), http.MethodPost,
		c.replicas[1].api+"/v1/apps/app0/proxy/oapi/media/upload?type=file", nil, bytes.NewReader(body)))
	// The gateway, as a client that can only put credentials in the URL: Basic auth, app as user.
	gw := strings.Replace(c.replicas[2].gateway, "http://", "http://app0:"+c.clientKey+"@", 1)
	check("15 MiB upload through the gateway, streamed without a length", c.proxied(t.Context(), http.MethodPost,
		gw+"/media/upload?type=file", nil, struct{ io.Reader }{bytes.NewReader(body)}))
	if ans := c.proxied(t.Context(), http.MethodGet, c.replicas[0].gateway+"/v1.0/contact/users/u1",
		http.Header{"X-Tokend-App": {"app0"}}, nil); !succeeded(ans) {
		t.Errorf("new-API call through the gateway: %s", ans)
	}
	tooLarge := c.proxied(t.Context(), http.MethodPost, c.replicas[0].api+"/v1/apps/app0/proxy/oapi/media/upload",
		nil, bytes.NewReader(make([]byte, 20<<20+1)))
	if tooLarge.status != http.StatusRequestEntityTooLarge || tooLarge.doc()["code"] != "request_too_large" {
		t.Errorf("upload over max_body: %s", tooLarge)
	}

	// A caller that leaves: DingTalk holds the request, the caller gives up, DingTalk's request ends.
	c.fake.fault(t, a.clientID, fakedingtalk.Fault{Mode: fakedingtalk.FaultHang, Endpoint: fakedingtalk.EndpointAPI})
	before := c.fake.calls(t)[a.clientID]
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan answer, 1)
	go func() { done <- c.contactUser(ctx, c.replicas[0], "leaver") }()
	eventually(t, 10*time.Second, "DingTalk holds the proxied call", func() bool {
		return c.fake.calls(t)[a.clientID].API > before.API
	})
	cancel()
	if ans := <-done; ans.err == nil {
		t.Errorf("the abandoned call got an answer: %s", ans)
	}
	eventually(t, 10*time.Second, "DingTalk's request cancelled", func() bool {
		return c.fake.calls(t)[a.clientID].Aborted > before.Aborted
	})
	c.fake.clearFaults(t)
	eventually(t, 10*time.Second, "the cancelled call counted", func() bool {
		return c.metric(c.replicas[0], "tokend_proxy_requests_total", map[string]string{"app": a.name, "family": "api", "result": "canceled"}) == 1
	})
}

// proxySpecWith is proxySpec with more lines under proxy: (indented two spaces).
func proxySpecWith(replicas int, proxyLines string) spec {
	s := proxySpec(replicas)
	s.extraYAML += proxyLines
	return s
}

// apiTimes returns when the fake received each API call.
func (f *fakeDT) apiTimes(t *testing.T) []time.Time {
	t.Helper()
	var r struct {
		Times []time.Time `json:"times"`
	}
	f.do(t, http.MethodGet, "api_times", nil, &r)
	return r.Times
}

// proxyBudget: proxied calls from three replicas together reach DingTalk no faster than
// proxy.max_rps; the calls over it get 429 rate_limited with Retry-After and never reach DingTalk.
func proxyBudget(t *testing.T, bins binaries) {
	const maxRPS = 20
	c := startCluster(t, bins, proxySpecWith(3, fmt.Sprintf("  max_rps: %d\n", maxRPS)))
	c.waitReady()
	before := len(c.fake.apiTimes(t))
	start := time.Now()
	const runFor = 3 * time.Second
	var mu sync.Mutex
	statuses := map[int]int{}
	noRetryAfter := 0
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			r := c.replicas[i%len(c.replicas)]
			for time.Since(start) < runFor {
				ans := c.contactUser(t.Context(), r, "u")
				mu.Lock()
				statuses[ans.status]++
				if ans.status == http.StatusTooManyRequests && (ans.doc()["code"] != "rate_limited" || ans.retryAfter == "") {
					noRetryAfter++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	times := c.fake.apiTimes(t)[before:]
	// The shared budget is a fixed one-second window in Redis: any sliding second may straddle two.
	most := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < time.Second; j++ {
			n++
		}
		most = max(most, n)
	}
	elapsed := time.Since(start)
	limit, total := 2*maxRPS, maxRPS*(elapsed.Seconds()+1)
	if blips := c.storeBlips(start); blips > 0 {
		// A Redis operation slower than tokend's 1 s deadline leaves a replica on its local bucket
		// (the same budget, for it alone) until its next ping: README, "Shared budget".
		t.Logf("%d store blips during the run: each replica may have spent the budget alone for a moment", blips)
		limit += len(c.replicas) * maxRPS
		total += float64(len(c.replicas) * maxRPS)
	}
	if most > limit || float64(len(times)) > total {
		t.Errorf("DingTalk got %d proxied calls in %v, at most %d in one second; budget %d/s for all replicas", len(times), elapsed.Round(time.Millisecond), most, maxRPS)
	}
	if statuses[http.StatusTooManyRequests] == 0 || statuses[http.StatusOK] != len(times) || statuses[http.StatusOK]+statuses[http.StatusTooManyRequests] != sum(statuses) || noRetryAfter > 0 {
		t.Errorf("answers by status %v (%d DingTalk calls); want 200 for each call made and 429 rate_limited for the rest", statuses, len(times))
	}
	t.Logf("summary: statuses=%v dingtalk_calls=%d most_in_one_second=%d budget=%d/s", statuses, len(times), most, maxRPS)
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// proxyBan: DingTalk answers a proxied call with its block page. That call gets 503 with
// Retry-After, and so does every later proxied call on every replica, without calling DingTalk;
// tokens are still served from memory.
func proxyBan(t *testing.T, bins binaries) {
	c := startCluster(t, bins, proxySpec(3))
	c.waitReady()
	a := c.apps[0]
	for _, r := range c.replicas {
		if ans := c.contactUser(t.Context(), r, "u"); !succeeded(ans) {
			t.Fatalf("replica %d before the ban: %s", r.i, ans)
		}
	}
	c.fake.fault(t, a.clientID, fakedingtalk.Fault{Mode: fakedingtalk.FaultBanHTML, Endpoint: fakedingtalk.EndpointAPI})
	met := c.contactUser(t.Context(), c.replicas[0], "u")
	if d := met.doc(); met.status != http.StatusServiceUnavailable || d["code"] != "upstream_unavailable" || d["upstream_code"] != "ip_ban" || met.retryAfter == "" {
		t.Fatalf("the call that met the block page: %s", met)
	}
	c.fake.clearFaults(t)
	before := c.fake.calls(t)[a.clientID].API
	for _, r := range c.replicas {
		eventually(t, 5*time.Second, fmt.Sprintf("replica %d paused", r.i), func() bool {
			ans := c.contactUser(t.Context(), r, "u")
			return ans.status == http.StatusServiceUnavailable && ans.doc()["code"] == "upstream_unavailable" && ans.retryAfter != ""
		})
	}
	if after := c.fake.calls(t)[a.clientID].API; after != before {
		t.Errorf("%d proxied calls reached DingTalk during the ban", after-before)
	}
	for _, r := range c.replicas {
		if s := c.credential(t.Context(), r, a.name, token.AccessToken); !s.ok() {
			t.Errorf("replica %d does not serve the token during the ban: %s", r.i, s.describe())
		}
	}
}
