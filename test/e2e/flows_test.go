package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/redistest"
)

// flowsCluster is a cluster whose client may also exchange user codes, open Stream connections and
// send through a signed robot, and the secret values of those flows that must never leak.
type flowsCluster struct {
	*cluster
	robotToken, robotSecret string
	// sharedToken is a robot's webhook that something besides tokend also posts to.
	sharedToken string

	mu     sync.Mutex
	values map[string]string // what → value: codes, user tokens, refresh tokens, Stream tickets
}

// startFlowsCluster starts the fake DingTalk, a redis-server and three tokend replicas sharing them,
// with one app, one signed robot "alerts" and a client allowed every flow. When the test ends, every
// process's output, every replica's /metrics and every Redis value are searched for the flows'
// secrets (besides the harness's own log check).
func startFlowsCluster(t *testing.T) *flowsCluster {
	t.Helper()
	bins := build(t)
	s := spec{replicas: 3, apps: 1, tokenTTL: 2 * time.Hour, margin: 10 * time.Minute, timeout: 5 * time.Second, retry: 5 * time.Second}
	c := &cluster{t: t, spec: s, bins: bins, dir: logDir(t), hc: newHTTPClient()}
	t.Cleanup(c.hc.CloseIdleConnections)
	c.redis = redistest.Start(t)
	c.apps = []app{{name: "app0", clientID: "dinge2eapp0", secret: "e2e-secret-" + randomHex(t, 16)}}
	c.fake = startFake(t, bins, c.dir, s.tokenTTL, c.apps)
	key, _, err := config.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.clientKey = key
	t.Cleanup(c.checkLogs)
	fc := &flowsCluster{cluster: c, robotToken: "e2e-robot-token-" + randomHex(t, 12), robotSecret: "SECe2e" + randomHex(t, 24),
		sharedToken: "e2e-shared-robot-" + randomHex(t, 12), values: map[string]string{}}
	c.fake.do(t, http.MethodPost, "robots", map[string]any{"token": fc.robotToken, "secret": fc.robotSecret}, nil)
	c.fake.do(t, http.MethodPost, "robots", map[string]any{"token": fc.sharedToken}, nil)
	// Registered before the replicas start: it runs after they were stopped (their logs complete)
	// and before checkLogs, while the fake and Redis still answer.
	t.Cleanup(fc.checkLeaks)

	c.config = c.writeConfig()
	f, err := os.OpenFile(c.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The client (the last entry written) gets every flow; the robot's secrets come from the
	// environment-free literal keys, as the other secrets of the file do.
	fmt.Fprintf(f, "    user_tokens: [\"*\"]\n    streams: [app0]\n    robots: [alerts, shared]\n")
	fmt.Fprintf(f, "robots:\n  - name: alerts\n    access_token: %s\n    secret: %s\n", fc.robotToken, fc.robotSecret)
	fmt.Fprintf(f, "  - name: shared\n    access_token: %s\n", fc.sharedToken)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for range s.replicas {
		c.launch()
	}
	for _, r := range c.replicas {
		c.announced(r)
	}
	c.waitReady()
	return fc
}

// secrets returns every secret value of the flows, by what it is.
func (fc *flowsCluster) secrets() map[string]string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	secrets := map[string]string{"the robot token": fc.robotToken, "the robot secret": fc.robotSecret, "the shared robot's token": fc.sharedToken}
	for what, v := range fc.values {
		secrets[what] = v
	}
	for _, a := range fc.apps {
		secrets["the secret of "+a.name] = a.secret
	}
	return secrets
}

// look fails the test if text holds a secret of the flows, without showing it.
func (fc *flowsCluster) look(t *testing.T, where, text string) {
	t.Helper()
	for what, v := range fc.secrets() {
		if strings.Contains(text, v) {
			t.Errorf("%s contains %s (not shown)", where, what)
		}
	}
}

// remember records a secret value of the flows for the leak check.
func (fc *flowsCluster) remember(what, v string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if v != "" {
		fc.values[what] = v
	}
}

// post sends body to path on replica r with the client key and decodes the JSON answer.
func (fc *flowsCluster) post(r *replica, path, body string) (int, http.Header, map[string]any) {
	t := fc.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.api+path, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, nil, nil
	}
	req.Header.Set("Authorization", "Bearer "+fc.clientKey)
	resp, err := fc.hc.Do(req)
	if err != nil {
		t.Errorf("POST %s on replica %d: %v", path, r.i, err)
		return 0, nil, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Errorf("POST %s on replica %d: %d, body not JSON (%d bytes)", path, r.i, resp.StatusCode, len(raw))
	}
	return resp.StatusCode, resp.Header, doc
}

// use makes t the test the cluster's helpers report to, until the returned function restores the
// previous one: subtests must not fail their parent.
func (fc *flowsCluster) use(t *testing.T) func() {
	prev := fc.t
	fc.t = t
	return func() { fc.t = prev }
}

func (fc *flowsCluster) flowCalls() fakedingtalk.FlowCounts {
	var n fakedingtalk.FlowCounts
	fc.fake.do(fc.t, http.MethodGet, "flows", nil, &n)
	return n
}

func TestFlowsAcrossReplicas(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	fc := startFlowsCluster(t)

	t.Run("OneCodeOnThreeReplicasOneCall", func(t *testing.T) {
		defer fc.use(t)()
		var code struct {
			Code string `json:"code"`
		}
		fc.fake.do(t, http.MethodPost, "user_codes", map[string]string{"app": "dinge2eapp0", "corp_id": "dinge2ecorp"}, &code)
		fc.remember("the login code", code.Code)
		before := fc.flowCalls().UserToken
		// Three presentations on each replica, all at once: one DingTalk call, one answer.
		answers := make([]map[string]any, 9)
		statuses := make([]int, 9)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range answers {
			r := fc.replicas[i%3]
			wg.Go(func() {
				<-start
				statuses[i], _, answers[i] = fc.post(r, "/v1/apps/app0/user_token", `{"code":"`+code.Code+`"}`)
			})
		}
		close(start)
		wg.Wait()
		for i, a := range answers {
			if statuses[i] != http.StatusOK {
				t.Fatalf("presentation %d on replica %d: %d %v", i, i%3, statuses[i], a["code"])
			}
			for _, k := range []string{"access_token", "refresh_token", "expires_at", "corp_id"} {
				if a[k] != answers[0][k] || a[k] == "" {
					t.Fatalf("presentation %d differs from presentation 0 in %s", i, k)
				}
			}
		}
		at, _ := answers[0]["access_token"].(string)
		rt, _ := answers[0]["refresh_token"].(string)
		fc.remember("the user access token", at)
		fc.remember("the user refresh token", rt)
		if answers[0]["corp_id"] != "dinge2ecorp" {
			t.Fatalf("corp_id %v", answers[0]["corp_id"])
		}
		if n := fc.flowCalls().UserToken - before; n != 1 {
			t.Fatalf("DingTalk received %d userAccessToken calls for one code, want 1", n)
		}

		// The refresh token is single-use too: presented on two replicas one after the other, it is
		// exchanged once and the same answer comes back.
		s1, _, r1 := fc.post(fc.replicas[1], "/v1/apps/app0/user_token", `{"refresh_token":"`+rt+`"}`)
		s2, _, r2 := fc.post(fc.replicas[2], "/v1/apps/app0/user_token", `{"refresh_token":"`+rt+`"}`)
		if s1 != 200 || s2 != 200 || r1["access_token"] != r2["access_token"] || r1["access_token"] == at {
			t.Fatalf("refresh: %d %d, same answer %v", s1, s2, r1["access_token"] == r2["access_token"])
		}
		fc.remember("the refreshed user access token", r1["access_token"].(string))
		fc.remember("the second refresh token", r1["refresh_token"].(string))
		if n := fc.flowCalls().UserToken - before; n != 2 {
			t.Fatalf("DingTalk received %d calls in all, want 2", n)
		}

		// A code DingTalk does not know: 400 invalid_grant with DingTalk's code, replayed too.
		for _, r := range fc.replicas[:2] {
			st, _, doc := fc.post(r, "/v1/apps/app0/user_token", `{"code":"fake-code-never-minted"}`)
			if st != http.StatusBadRequest || doc["code"] != "invalid_grant" || doc["upstream_code"] != "invalidAuthCode" {
				t.Fatalf("unknown code on replica %d: %d %v", r.i, st, doc)
			}
		}
		if n := fc.flowCalls().UserToken - before; n != 3 {
			t.Fatalf("DingTalk received %d calls in all, want 3 (the refusal replayed)", n)
		}
	})

	t.Run("TwentyFiveRobotMessagesTwentyDelivered", func(t *testing.T) {
		defer fc.use(t)()
		before := fc.flowCalls()
		var wg sync.WaitGroup
		var mu sync.Mutex
		counts := map[int]int{}
		start := make(chan struct{})
		for i := range 25 {
			r := fc.replicas[i%3]
			wg.Go(func() {
				<-start
				st, h, doc := fc.post(r, "/v1/robots/alerts/send", fmt.Sprintf(`{"msgtype":"text","text":{"content":"alert %d"}}`, i))
				mu.Lock()
				defer mu.Unlock()
				counts[st]++
				switch st {
				case http.StatusOK:
					if doc["errcode"] != float64(0) {
						t.Errorf("200 with %v", doc)
					}
				case http.StatusTooManyRequests:
					if doc["code"] != "rate_limited" || h.Get("Retry-After") == "" {
						t.Errorf("429 without rate_limited and Retry-After: %v %q", doc["code"], h.Get("Retry-After"))
					}
				}
			})
		}
		close(start)
		wg.Wait()
		if counts[200] != 20 || counts[429] != 5 {
			t.Fatalf("statuses %v, want 20×200 and 5×429", counts)
		}
		after := fc.flowCalls()
		if d := after.RobotDelivered - before.RobotDelivered; d != 20 || after.RobotBlocked != before.RobotBlocked || after.RobotSend-before.RobotSend != 20 {
			t.Fatalf("the fake received %d sends, delivered %d, blocked %d times; want 20, 20, 0",
				after.RobotSend-before.RobotSend, d, after.RobotBlocked-before.RobotBlocked)
		}
		var sent, limited float64
		for _, r := range fc.replicas {
			sent += fc.metric(r, "tokend_robot_messages_total", map[string]string{"robot": "alerts", "result": "sent"})
			limited += fc.metric(r, "tokend_robot_messages_total", map[string]string{"robot": "alerts", "result": "rate_limited"})
		}
		if sent != 20 || limited != 5 {
			t.Fatalf("metrics: sent %v, rate_limited %v", sent, limited)
		}
	})

	t.Run("ABlockedRobotIsPausedOnEveryReplica", func(t *testing.T) {
		defer fc.use(t)()
		// Something else posts 20 messages through the shared webhook within the minute: DingTalk
		// blocks tokend's next one, and tokend pauses the robot everywhere.
		for i := range 20 {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, fc.fake.base+"/robot/send?access_token="+fc.sharedToken,
				strings.NewReader(`{"msgtype":"text","text":{"content":"from elsewhere"}}`))
			resp, err := fc.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("direct post %d: %d", i, resp.StatusCode)
			}
		}
		before := fc.flowCalls()
		msg := `{"msgtype":"text","text":{"content":"from tokend"}}`
		st, h, doc := fc.post(fc.replicas[0], "/v1/robots/shared/send", msg)
		if st != http.StatusServiceUnavailable || doc["upstream_code"] != "410100" || h.Get("Retry-After") != "600" {
			t.Fatalf("the blocked send: %d %v, Retry-After %q", st, doc, h.Get("Retry-After"))
		}
		for _, r := range fc.replicas {
			st, h, doc := fc.post(r, "/v1/robots/shared/send", msg)
			if st != http.StatusServiceUnavailable || doc["code"] != "upstream_unavailable" || h.Get("Retry-After") == "" {
				t.Fatalf("replica %d during the pause: %d %v", r.i, st, doc)
			}
		}
		if n := fc.flowCalls().RobotSend - before.RobotSend; n != 1 {
			t.Fatalf("DingTalk received %d sends for the shared robot, want 1 (then the pause)", n)
		}
		// The other robot is not paused.
		if st, _, _ := fc.post(fc.replicas[1], "/v1/robots/alerts/send", msg); st == http.StatusServiceUnavailable {
			t.Fatal("the pause of one robot stopped another")
		}
	})

	t.Run("StreamTicketsAreNeverShared", func(t *testing.T) {
		defer fc.use(t)()
		before := fc.flowCalls().Stream
		body := `{"subscriptions":[{"type":"EVENT","topic":"*"},{"type":"CALLBACK","topic":"/v1.0/im/bot/messages/get"}],"ua":"e2e/1"}`
		s1, _, a := fc.post(fc.replicas[0], "/v1/apps/app0/stream_ticket", body)
		s2, _, b := fc.post(fc.replicas[0], "/v1/apps/app0/stream_ticket", body)
		if s1 != 200 || s2 != 200 || a["ticket"] == b["ticket"] || !strings.HasPrefix(fmt.Sprint(a["endpoint"]), "ws://") {
			t.Fatalf("tickets: %d %d, distinct %v, endpoint %v", s1, s2, a["ticket"] != b["ticket"], a["endpoint"])
		}
		fc.remember("a stream ticket", fmt.Sprint(a["ticket"]))
		fc.remember("another stream ticket", fmt.Sprint(b["ticket"]))
		if n := fc.flowCalls().Stream - before; n != 2 {
			t.Fatalf("DingTalk received %d connections/open calls, want 2", n)
		}
		if st, _, doc := fc.post(fc.replicas[1], "/v1/apps/app0/stream_ticket", `{"subscriptions":[{"type":"WEBHOOK","topic":"*"}]}`); st != 400 || doc["code"] != "bad_request" {
			t.Fatalf("bad subscription: %d %v", st, doc)
		}
	})

	// Every value of the scenarios above is known now: no replica's metrics may hold one.
	for _, r := range fc.replicas {
		text, err := fc.metrics(r)
		if err != nil {
			t.Fatalf("replica %d: %v", r.i, err)
		}
		fc.look(t, fmt.Sprintf("replica %d's /metrics", r.i), text)
		if !strings.Contains(text, "tokend_user_tokens_total{") || !strings.Contains(text, "tokend_robot_messages_total{") {
			t.Errorf("replica %d's /metrics lacks the flows' metrics", r.i)
		}
	}
}

// checkLeaks fails the test if a process's output, a replica's /metrics or a Redis value holds a
// secret of the flows (the robot's token and secret, the app secret, codes, user tokens, refresh
// tokens, Stream tickets). It never prints the value it found.
func (fc *flowsCluster) checkLeaks() {
	t := fc.cluster.t
	if n := len(fc.secrets()); n < 8 {
		t.Errorf("only %d values to look for: a scenario did not record its values", n)
	}
	look := func(where, text string) { fc.look(t, where, text) }
	procs := []*process{fc.fake.proc}
	for _, r := range fc.replicas {
		procs = append(procs, r.proc)
	}
	for _, p := range procs {
		all, _ := p.out.snapshot()
		look(p.name+"'s output", strings.Join(all, "\n"))
	}
	// The replicas are stopped by now; their metrics were checked by the scenarios while running,
	// so the Redis values are what is left to search, with every key's type.
	keys, err := fc.redis.Do("KEYS", "*")
	if err != nil {
		t.Errorf("redis KEYS: %v", err)
		return
	}
	var dump bytes.Buffer
	for _, k := range strings.Split(keys, "\n") {
		if k == "" {
			continue
		}
		dump.WriteString(k + "\n")
		typ, _ := fc.redis.Do("TYPE", k)
		var v string
		switch typ {
		case "string":
			v, err = fc.redis.Do("GET", k)
		case "hash":
			v, err = fc.redis.Do("HGETALL", k)
		case "zset":
			v, err = fc.redis.Do("ZRANGE", k, "0", "-1")
		}
		if err != nil {
			t.Errorf("redis read %s: %v", k, err)
		}
		dump.WriteString(v + "\n")
	}
	look("a Redis key or value", dump.String())
	if !strings.Contains(dump.String(), "grant:app0:") || !strings.Contains(dump.String(), "window:robot:alerts") {
		t.Errorf("Redis holds no held user-token result or robot window: the search above proves nothing")
	}
}
