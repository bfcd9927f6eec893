package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/token"
)

// requestTimeout bounds every client request of the suite.
const requestTimeout = 20 * time.Second

func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// sample is one client request and what came back, with the time the answer was received.
type sample struct {
	replica    int
	app        string
	kind       token.Kind
	start, end time.Time
	status     int
	// code and upstreamCode come from a problem answer.
	code, upstreamCode string
	retryAfter         string
	value              string
	expiresAt          time.Time
	err                error
}

func (s sample) latency() time.Duration { return s.end.Sub(s.start) }
func (s sample) ok() bool               { return s.err == nil && s.status == http.StatusOK }

// refused reports whether the request failed because the connection was refused: the request never
// reached a server.
func (s sample) refused() bool {
	var op *net.OpError
	return s.err != nil && errors.As(s.err, &op) && op.Op == "dial"
}

// describe is a sample for failure messages: never the value, only its fingerprint.
func (s sample) describe() string {
	what := fmt.Sprintf("replica %d %s %s at %s (took %v)", s.replica, s.app, s.kind, s.end.Format("15:04:05.000"), s.latency().Round(time.Millisecond))
	switch {
	case s.err != nil:
		return what + ": error: " + s.err.Error()
	case s.status != http.StatusOK:
		return fmt.Sprintf("%s: %d %s upstream_code=%q", what, s.status, s.code, s.upstreamCode)
	}
	return fmt.Sprintf("%s: 200 value %s expires_at %s", what, token.Fingerprint(s.value), s.expiresAt.Format(time.RFC3339))
}

// credential asks replica r for app's credential of kind.
func (c *cluster) credential(ctx context.Context, r *replica, app string, kind token.Kind) sample {
	path := "/v1/apps/" + app + "/access_token"
	if kind == token.JSAPITicket {
		path = "/v1/apps/" + app + "/jsapi_ticket"
	}
	return c.call(ctx, r, app, kind, http.MethodGet, path, nil)
}

// invalidate reports value, app's access token, as rejected by DingTalk, to replica r.
func (c *cluster) invalidate(ctx context.Context, r *replica, app, value string) sample {
	body, _ := json.Marshal(map[string]string{"access_token": value})
	return c.call(ctx, r, app, token.AccessToken, http.MethodPost, "/v1/apps/"+app+"/access_token/invalidate", strings.NewReader(string(body)))
}

// call makes one client API request and records it.
func (c *cluster) call(ctx context.Context, r *replica, app string, kind token.Kind, method, path string, body io.Reader) sample {
	return c.send(ctx, c.hc, nil, r, app, kind, method, path, body)
}

// send is call with a client of its own and extra headers.
func (c *cluster) send(ctx context.Context, hc *http.Client, hdr http.Header, r *replica, app string, kind token.Kind, method, path string, body io.Reader) sample {
	s := sample{replica: r.i, app: app, kind: kind, start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, method, r.api+path, body)
	if err != nil {
		s.err, s.end = err, time.Now()
		return s
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.clientKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		s.err, s.end = err, time.Now()
		return s
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.end = time.Now()
	s.status = resp.StatusCode
	s.retryAfter = resp.Header.Get("Retry-After")
	if err != nil {
		s.err = err
		return s
	}
	s.parse(raw)
	return s
}

// parse reads a credential or a problem out of an answer body.
func (s *sample) parse(raw []byte) {
	var b struct {
		AccessToken  string    `json:"access_token"`
		Ticket       string    `json:"ticket"`
		ExpiresAt    time.Time `json:"expires_at"`
		Code         string    `json:"code"`
		UpstreamCode string    `json:"upstream_code"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		s.err = fmt.Errorf("status %d, undecodable body: %w", s.status, err)
		return
	}
	s.value, s.expiresAt, s.code, s.upstreamCode = b.AccessToken, b.ExpiresAt, b.Code, b.UpstreamCode
	if s.kind == token.JSAPITicket {
		s.value = b.Ticket
	}
	if s.status == http.StatusOK && s.value == "" {
		s.err = errors.New("200 without a credential")
	}
}

// current asks replica r for app's access token and fails the test if it cannot get one.
func (c *cluster) current(r *replica, app string) sample {
	c.t.Helper()
	s := c.credential(c.t.Context(), r, app, token.AccessToken)
	if !s.ok() {
		c.t.Fatalf("current token: %s", s.describe())
	}
	return s
}

// readyzBody is /readyz's JSON.
type readyzBody struct {
	Status string `json:"status"`
	Store  string `json:"store"`
	Apps   []struct {
		Name        string        `json:"name"`
		AccessToken readyzStatus  `json:"access_token"`
		JSAPITicket *readyzStatus `json:"jsapi_ticket"`
	} `json:"apps"`
}

type readyzStatus struct {
	State        string    `json:"state"`
	ExpiresAt    time.Time `json:"expires_at"`
	UpstreamCode string    `json:"upstream_code"`
}

func (b readyzBody) app(name string) (readyzStatus, bool) {
	for _, a := range b.Apps {
		if a.Name == name {
			return a.AccessToken, true
		}
	}
	return readyzStatus{}, false
}

func (c *cluster) readyz(r *replica) (int, readyzBody, error) {
	var body readyzBody
	raw, code, err := c.get(r.ops + "/readyz")
	if err != nil {
		return 0, body, err
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return code, body, fmt.Errorf("readyz: %w", err)
	}
	return code, body, nil
}

// metrics returns r's /metrics text.
func (c *cluster) metrics(r *replica) (string, error) {
	raw, code, err := c.get(r.ops + "/metrics")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("metrics: status %d", code)
	}
	return string(raw), err
}

// metric sums r's samples of the metric name whose labels include every pair of want.
func (c *cluster) metric(r *replica, name string, want map[string]string) float64 {
	c.t.Helper()
	text, err := c.metrics(r)
	if err != nil {
		c.t.Fatalf("replica %d: %v", r.i, err)
	}
	return metricValue(text, name, want)
}

func metricValue(text, name string, want map[string]string) float64 {
	var sum float64
	for _, l := range metricLines(text) {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels := map[string]string{}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			for _, kv := range strings.Split(rest[1:end], ",") {
				k, v, _ := strings.Cut(kv, "=")
				labels[k] = strings.Trim(v, `"`)
			}
			rest = rest[end+1:]
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func (c *cluster) get(url string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return raw, resp.StatusCode, err
}

// load is a set of concurrent clients asking the replicas for tokens until stopped.
type load struct {
	c       *cluster
	targets atomic.Pointer[[]int] // replicas the clients ask, by index
	stopped chan struct{}
	wg      sync.WaitGroup

	mu      sync.Mutex
	samples []sample
	probes  []sample // /healthz of every replica, to tell a stalled process from a waiting request
	gaps    []sample // moments the suite's own process did not run (heartbeats late by 50 ms or more)
}

// startLoad starts clients goroutines, each asking the replicas in turn for apps' access tokens and
// pausing pace between requests, until stop is called or limit passes.
func (c *cluster) startLoad(clients int, pace time.Duration, apps []string, limit time.Duration) *load {
	l := &load{c: c, stopped: make(chan struct{})}
	// The replicas known now: a replica added later is not asked (and c.replicas may grow meanwhile).
	replicas := slices.Clone(c.replicas)
	all := make([]int, len(replicas))
	for i := range all {
		all[i] = i
	}
	l.targets.Store(&all)
	deadline := time.Now().Add(limit)
	ctx := c.t.Context()
	for range clients {
		l.wg.Go(func() {
			l.paced(ctx, deadline, func() (time.Duration, bool) {
				ts := *l.targets.Load()
				if len(ts) == 0 {
					return pace, true
				}
				// Every client asks every replica for every app, in an order of its own.
				r := replicas[ts[rand.IntN(len(ts))]]
				s := c.credential(ctx, r, apps[rand.IntN(len(apps))], token.AccessToken)
				if ctx.Err() != nil {
					return 0, false // the test is over: the sample says nothing about tokend
				}
				l.mu.Lock()
				l.samples = append(l.samples, s)
				l.mu.Unlock()
				return pace, true
			})
		})
	}
	// A heartbeat notices when this process itself does not run (a stalled machine, a GC pause):
	// every request in flight then looks slow, whatever the replicas did.
	l.wg.Go(func() {
		last := time.Now()
		l.paced(ctx, deadline, func() (time.Duration, bool) {
			now := time.Now()
			if now.Sub(last) >= 50*time.Millisecond {
				l.mu.Lock()
				l.gaps = append(l.gaps, sample{start: last, end: now})
				l.mu.Unlock()
			}
			last = now
			return 10 * time.Millisecond, true
		})
	})
	// A probe per replica asks /healthz, which touches neither the broker nor Redis: when it is slow
	// too, the process (or the machine) stalled, whatever the request was waiting for.
	for _, r := range replicas {
		l.wg.Go(func() {
			l.paced(ctx, deadline, func() (time.Duration, bool) {
				p := sample{replica: r.i, start: time.Now()}
				_, p.status, p.err = c.get(r.ops + "/healthz")
				p.end = time.Now()
				if ctx.Err() != nil {
					return 0, false
				}
				l.mu.Lock()
				l.probes = append(l.probes, p)
				l.mu.Unlock()
				return 50 * time.Millisecond, true
			})
		})
	}
	return l
}

// paced runs step at once and then again each time the pause it returned has passed, until step
// returns more false, stop is called, ctx ends or deadline passes.
func (l *load) paced(ctx context.Context, deadline time.Time, step func() (pause time.Duration, more bool)) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-l.stopped:
			return
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		pause, more := step()
		if !more {
			return
		}
		timer.Reset(pause)
	}
}

// stalled reports whether a probe of the same replica overlapping s was itself slower than half of
// limit, or the suite's own process did not run for that long while s was in flight: then s was slow
// because a process (or the machine) stalled, not because of what it asked.
func (l *load) stalled(s sample, limit time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	overlaps := func(p sample) bool { return p.start.Before(s.end) && p.end.After(s.start) && p.latency() >= limit/2 }
	for _, p := range l.probes {
		if p.replica == s.replica && overlaps(p) {
			return true
		}
	}
	for _, g := range l.gaps {
		if overlaps(g) {
			return true
		}
	}
	return false
}

// slow splits the samples slower than limit into those a stall explains and the others.
func (l *load) slow(samples []sample, limit time.Duration) (stalled, waited []sample) {
	for _, s := range samples {
		switch {
		case s.latency() < limit:
		case l.stalled(s, limit):
			stalled = append(stalled, s)
		default:
			waited = append(waited, s)
		}
	}
	return stalled, waited
}

// retire stops sending new requests to replica i (requests in flight continue).
func (l *load) retire(i int) {
	old := *l.targets.Load()
	var next []int
	for _, x := range old {
		if x != i {
			next = append(next, x)
		}
	}
	l.targets.Store(&next)
}

// stop ends the load, lets the requests in flight finish, and returns every sample.
func (l *load) stop() []sample {
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sample(nil), l.samples...)
}

// count is a snapshot of how many samples the load has recorded so far.
func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.samples)
}

// verdict is what the checker found in a set of samples.
type verdict struct {
	served   int           // 200 answers
	errors   int           // anything else
	invalid  int           // 200 answers whose value was not valid at DingTalk when received
	excused  int           // invalid values inside an allowed window (e.g. after a revocation)
	maxLat   time.Duration // slowest request
	problems []string      // the first few failures, described without secrets
}

func (v *verdict) note(s string) {
	if len(v.problems) < 10 {
		v.problems = append(v.problems, s)
	}
}

// check asks DingTalk's record (the fake's list of issued values) whether every credential a client
// received was valid at the moment it arrived: issued by then, not expired, not revoked. excuse, if
// not nil, may excuse an invalid value (it is then counted, not failed).
func check(samples []sample, issued []fakedingtalk.Issued, excuse func(sample) bool) verdict {
	byValue := make(map[string]fakedingtalk.Issued, len(issued))
	for _, i := range issued {
		byValue[i.Value] = i
	}
	var v verdict
	for _, s := range samples {
		v.maxLat = max(v.maxLat, s.latency())
		if !s.ok() {
			v.errors++
			continue
		}
		v.served++
		i, known := byValue[s.value]
		at := s.end
		reason := ""
		switch {
		case !known:
			reason = "never issued by DingTalk"
		case i.Kind != s.kind:
			reason = "a " + string(i.Kind) + ", not a " + string(s.kind)
		case at.Before(i.IssuedAt):
			reason = "received before DingTalk issued it"
		case !at.Before(i.ExpiresAt):
			reason = fmt.Sprintf("expired at DingTalk %v before it was received", at.Sub(i.ExpiresAt).Round(time.Millisecond))
		case !i.RevokedAt.IsZero() && !at.Before(i.RevokedAt):
			reason = fmt.Sprintf("revoked at DingTalk %v before it was received", at.Sub(i.RevokedAt).Round(time.Millisecond))
		}
		if reason == "" {
			continue
		}
		if excuse != nil && excuse(s) {
			v.excused++
			continue
		}
		v.invalid++
		v.note(s.describe() + ": " + reason)
	}
	return v
}

// failures returns the failed samples for which keep (nil: all) returns true.
func failures(samples []sample, keep func(sample) bool) []sample {
	return filter(samples, func(s sample) bool { return !s.ok() && (keep == nil || keep(s)) })
}

// describeAll describes the first ten samples, for failure messages.
func describeAll(samples []sample) []string {
	var out []string
	for i, s := range samples {
		if i == 10 {
			break
		}
		out = append(out, s.describe())
	}
	return out
}

// filter returns the samples for which keep returns true.
func filter(samples []sample, keep func(sample) bool) []sample {
	var out []sample
	for _, s := range samples {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}
