package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/token"
)

const (
	isvSuite = "e2esuite"
	isvCorp  = "dinge2ecorpa"
	isvAES   = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus"
)

// isvCluster is a cluster whose replicas serve one third-party app, saas, taking pushes on their
// callback listeners.
type isvCluster struct {
	*cluster
	secret, cbToken string
	callbacks       map[int]string // callback listener URL by replica index
	// stream: no callback settings, so the replicas subscribe to DingTalk Stream instead.
	stream bool
	// tickets are the suite tickets pushed: secrets the logs must not hold.
	tickets []string
}

func startISVCluster(t *testing.T, replicas int) *isvCluster {
	return startISV(t, replicas, false)
}

func startISV(t *testing.T, replicas int, stream bool) *isvCluster {
	t.Helper()
	bins := build(t)
	c := &isvCluster{cluster: startCluster(t, bins, spec{replicas: 0, apps: 0, tokenTTL: time.Hour, margin: 10 * time.Minute,
		timeout: 5 * time.Second, retry: 30 * time.Second}),
		secret: "e2e-suite-secret-" + randomHex(t, 12), cbToken: "cbtok" + randomHex(t, 6), callbacks: map[int]string{},
		stream: stream}
	c.fake.do(t, http.MethodPost, "isv/suites", map[string]any{"key": isvSuite, "secret": c.secret}, nil)
	t.Cleanup(func() { c.checkISVLogs() })
	c.config = c.writeISVConfig()
	for range replicas {
		c.start()
	}
	c.waitReady()
	return c
}

// writeISVConfig writes the configuration: the saas app with callback settings, corps listed none,
// and one client allowed every app and saas's suite tickets.
func (c *isvCluster) writeISVConfig() string {
	t := c.t
	sum := config.HashKey(c.clientKey)
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nops_listen: 127.0.0.1:0\nlog:\n  level: info\n  format: json\n")
	if !c.stream {
		b.WriteString("callback_listen: 127.0.0.1:0\n")
	}
	fmt.Fprintf(&b, "store:\n  redis:\n    url: %s\n    key_prefix: tokend\n", c.redis.URL())
	fmt.Fprintf(&b, "refresh:\n  margin: %s\n", c.spec.margin)
	fmt.Fprintf(&b, "upstream:\n  timeout: %s\n  failure_retry: %s\n", c.spec.timeout, c.spec.retry)
	fmt.Fprintf(&b, "dingtalk:\n  api_base: %s\n  oapi_base: %s\n", c.fake.base, c.fake.base)
	fmt.Fprintf(&b, "apps:\n  - name: saas\n    type: dingtalk_isv\n    suite_key: %s\n    suite_secret: %s\n", isvSuite, c.secret)
	if !c.stream {
		fmt.Fprintf(&b, "    callback:\n      token: %s\n      aes_key: %s\n", c.cbToken, isvAES)
	}
	b.WriteString("    jsapi_ticket: true\n")
	fmt.Fprintf(&b, "clients:\n  - name: chaos\n    key_sha256: %s\n    apps: [\"*\"]\n    suite_tickets: [saas]\n", hex.EncodeToString(sum[:]))
	b.WriteString("    proxy:\n      saas: [\"GET api:/v1.0/contact/users/*\"]\n")
	path := filepath.Join(c.dir, "tokend.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start launches one replica and learns its addresses, the callback listener's included.
func (c *isvCluster) start() *replica {
	t := c.t
	t.Helper()
	r := c.launch()
	c.announced(r)
	if c.stream {
		return r
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	var l struct {
		Msg  string `json:"msg"`
		Addr string `json:"callback_listen"`
	}
	if _, err := r.proc.out.await(ctx, r.proc.done, func(line string) bool {
		return json.Unmarshal([]byte(line), &l) == nil && l.Msg == "callback listener serving"
	}); err != nil {
		t.Fatalf("replica %d did not announce its callback listener: %v", r.i, err)
	}
	c.callbacks[r.i] = "http://" + l.Addr + "/callbacks/saas"
	return r
}

// push makes the fake push ev to replica r's callback listener and requires DingTalk's "success".
func (c *isvCluster) push(r *replica, ev fakedingtalk.ISVEvent) {
	t := c.t
	t.Helper()
	c.fake.do(t, http.MethodPut, "isv/suites/"+isvSuite+"/callback", map[string]string{"url": c.callbacks[r.i], "token": c.cbToken, "aes_key": isvAES}, nil)
	var res fakedingtalk.PushResult
	c.fake.do(t, http.MethodPost, "isv/suites/"+isvSuite+"/push", ev, &res)
	if !res.OK {
		t.Fatalf("push %s to replica %d: status %d, answer not what DingTalk wants", ev.Type, r.i, res.Status)
	}
	if res.SuiteTicket != "" {
		c.tickets = append(c.tickets, res.SuiteTicket)
	}
}

func (c *isvCluster) corpCalls() int {
	var calls map[string]map[string]fakedingtalk.ISVCounts
	c.fake.do(c.t, http.MethodGet, "isv/calls", nil, &calls)
	return calls[isvSuite][isvCorp].Token
}

func (c *isvCluster) valid(kind token.Kind, value string) bool {
	var v struct {
		Valid bool `json:"valid"`
	}
	c.fake.do(c.t, http.MethodPost, "isv/valid", map[string]any{"kind": kind, "value": value, "at": time.Now()}, &v)
	return v.Valid
}

func (c *isvCluster) corpToken(ctx context.Context, r *replica) sample {
	return c.call(ctx, r, "saas", token.AccessToken, http.MethodGet, "/v1/apps/saas/corps/"+isvCorp+"/access_token", nil)
}

func (c *isvCluster) corps(r *replica) []string {
	raw, code, err := c.getAuth(r.api + "/v1/apps/saas/corps")
	if err != nil || code != http.StatusOK {
		c.t.Fatalf("replica %d corps: %d %v", r.i, code, err)
	}
	var body struct {
		Corps []struct {
			CorpID string `json:"corp_id"`
		} `json:"corps"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, cs := range body.Corps {
		out = append(out, cs.CorpID)
	}
	return out
}

func (c *isvCluster) getAuth(url string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(c.t.Context(), http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.clientKey)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	err = json.NewDecoder(resp.Body).Decode(&raw)
	return raw, resp.StatusCode, err
}

// checkISVLogs fails the test if a process's output holds a suite secret, ticket or token.
func (c *isvCluster) checkISVLogs() {
	t := c.t
	if c.fake.proc.exited() {
		return
	}
	var issued []fakedingtalk.ISVIssued
	c.fake.do(t, http.MethodGet, "isv/issued", nil, &issued)
	secrets := map[string]string{"the suite secret": c.secret, "the callback token": c.cbToken, "the aes key": isvAES}
	for _, i := range issued {
		secrets[fmt.Sprintf("%s %s", i.Kind, token.Fingerprint(i.Value))] = i.Value
	}
	for n, v := range c.tickets {
		secrets[fmt.Sprintf("suite ticket %d", n)] = v
	}
	for _, r := range c.replicas {
		all, _ := r.proc.out.snapshot()
		for n, line := range all {
			for what, v := range secrets {
				if v != "" && strings.Contains(line, v) {
					t.Errorf("%s's output line %d contains %s (line not shown)", r.proc.name, n+1, what)
				}
			}
		}
	}
}

// TestISV: three replicas, one suite: no ticket yet; a pushed ticket; 100 concurrent callers for a
// cold corp (one fetch, every token alive); one report on three replicas (one fetch); every replica
// killed and restarted (the stored token served, no fetch); a relief (the corp gone everywhere).
func TestISV(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	c := startISVCluster(t, 3)
	ctx := t.Context()

	// No ticket yet: 503 suite_ticket_missing, and the replica ready with the app failing.
	if s := c.credential(ctx, c.replicas[0], "saas", token.AccessToken); s.status != http.StatusServiceUnavailable || s.code != "suite_ticket_missing" {
		t.Fatalf("suite token before any ticket: %s", s.describe())
	}
	raw, code, err := c.get(c.replicas[1].ops + "/readyz")
	if err != nil || code != http.StatusOK || !strings.Contains(string(raw), `"upstream_code":"suite_ticket_missing"`) {
		t.Fatalf("readyz before any ticket: %d %s %v", code, raw, err)
	}

	// A ticket pushed to replica 0's callback listener serves the suite token everywhere, within
	// seconds (a replica waiting for a ticket looks at the store again every second).
	c.push(c.replicas[0], fakedingtalk.ISVEvent{Type: "suite_ticket"})
	for _, r := range c.replicas {
		eventually(t, 5*time.Second, fmt.Sprintf("suite token on replica %d", r.i), func() bool {
			s := c.credential(ctx, r, "saas", token.AccessToken)
			return s.status == http.StatusOK && c.valid(fakedingtalk.KindSuiteToken, s.value)
		})
	}

	// 100 concurrent callers on three replicas for a cold corp: one fetch, every token alive.
	c.push(c.replicas[1], fakedingtalk.ISVEvent{Type: "tmp_auth_code", Corp: isvCorp})
	// The push itself fetches the corp's token on replica 1, racing the callers: one fetch in all.
	samples := make([]sample, 100)
	var wg sync.WaitGroup
	for i := range samples {
		wg.Go(func() { samples[i] = c.corpToken(ctx, c.replicas[i%3]) })
	}
	wg.Wait()
	for _, s := range samples {
		if s.status != http.StatusOK || s.value != samples[0].value {
			t.Fatalf("cold corp: %s", s.describe())
		}
	}
	if !c.valid(token.AccessToken, samples[0].value) {
		t.Fatal("the corp token the callers got is not alive at DingTalk")
	}
	if n := c.corpCalls(); n != 1 {
		t.Fatalf("%d corp token fetches for a cold corp, want 1", n)
	}
	first := samples[0].value

	// The same token reported invalid on three replicas at once: one fetch, everyone gets the new one.
	reports := make([]sample, 9)
	body := fmt.Sprintf(`{"access_token":%q}`, first)
	for i := range reports {
		wg.Go(func() {
			reports[i] = c.call(ctx, c.replicas[i%3], "saas", token.AccessToken, http.MethodPost,
				"/v1/apps/saas/corps/"+isvCorp+"/access_token/invalidate", strings.NewReader(body))
		})
	}
	wg.Wait()
	if n := c.corpCalls(); n != 2 {
		t.Fatalf("%d corp token fetches after one report on three replicas, want 2 in all", n)
	}
	second := reports[0].value
	for _, s := range reports {
		if s.status != http.StatusOK || s.value != second || s.value == first {
			t.Fatalf("report: %s", s.describe())
		}
	}
	if !c.valid(token.AccessToken, second) || c.valid(token.AccessToken, first) {
		t.Fatal("after the report, the new token is not the live one")
	}

	// Every replica killed and three new ones started: the stored corp token, no fetch.
	for _, r := range c.replicas {
		r.proc.signal(t, syscall.SIGKILL)
		r.proc.wait(t, 10*time.Second)
	}
	var fresh []*replica
	for range 3 {
		fresh = append(fresh, c.start())
	}
	for _, r := range fresh {
		eventually(t, startTimeout, fmt.Sprintf("replica %d ready", r.i), func() bool {
			code, _, err := c.readyz(r)
			return err == nil && code == http.StatusOK
		})
		if s := c.corpToken(ctx, r); s.status != http.StatusOK || s.value != second {
			t.Fatalf("restarted: %s", s.describe())
		}
	}
	if n := c.corpCalls(); n != 2 {
		t.Fatalf("%d corp token fetches after the restarts, want still 2", n)
	}
	for _, r := range fresh {
		if got := c.corps(r); len(got) != 1 || got[0] != isvCorp {
			t.Fatalf("replica %d corps %v", r.i, got)
		}
		raw, _, err := c.get(r.ops + "/readyz")
		if err != nil || !strings.Contains(string(raw), `"corps":{"ok":1,"refreshing":0,"failing":0}`) {
			t.Fatalf("replica %d readyz %s %v", r.i, raw, err)
		}
	}

	// The corp's proxy route: DingTalk's API with the corp's token. A token DingTalk revoked is
	// replaced (one fetch) and the call sent again.
	proxied := func(r *replica) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.api+"/v1/apps/saas/corps/"+isvCorp+"/proxy/api/v1.0/contact/users/u1", nil)
		req.Header.Set("Authorization", "Bearer "+c.clientKey)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	if code, body := proxied(fresh[0]); code != http.StatusOK {
		t.Fatalf("corp proxy: %d %s", code, body)
	}
	var revoked struct {
		Revoked bool `json:"revoked"`
	}
	c.fake.do(t, http.MethodPost, "isv/revoke", map[string]string{"value": second}, &revoked)
	if !revoked.Revoked {
		t.Fatal("the fake did not revoke the corp token")
	}
	if code, body := proxied(fresh[1]); code != http.StatusOK {
		t.Fatalf("corp proxy after a revocation: %d %s", code, body)
	}
	if n := c.corpCalls(); n != 3 {
		t.Fatalf("%d corp token fetches after a revocation met by the proxy, want 3", n)
	}

	// A relief pushed to one replica: the corp is gone from all, and refused without a fetch.
	c.fake.do(t, http.MethodPost, "isv/suites/"+isvSuite+"/corps/"+isvCorp+"/relieve", nil, nil)
	c.push(fresh[0], fakedingtalk.ISVEvent{Type: "suite_relieve", Corp: isvCorp})
	for _, r := range fresh {
		eventually(t, 10*time.Second, fmt.Sprintf("corp gone from replica %d", r.i), func() bool { return len(c.corps(r)) == 0 })
		if s := c.corpToken(ctx, r); s.status != http.StatusNotFound || s.code != "corp_not_found" {
			t.Fatalf("relieved corp: %s", s.describe())
		}
	}
	if n := c.corpCalls(); n != 3 {
		t.Fatalf("%d corp token fetches after the relief, want still 3", n)
	}
}

func (c *isvCluster) streamStats() fakedingtalk.StreamStats {
	var st fakedingtalk.StreamStats
	c.fake.do(c.t, http.MethodGet, "isv/suites/"+isvSuite+"/stream", nil, &st)
	return st
}

// leader returns the replica (among rs) whose latest lease line says it leads.
func leader(rs []*replica) *replica {
	for _, r := range rs {
		all, _ := r.proc.out.snapshot()
		for i := len(all) - 1; i >= 0; i-- {
			if strings.Contains(all[i], "lease obtained: leading") {
				return r
			}
			if strings.Contains(all[i], "lease lost: following") {
				break
			}
		}
	}
	return nil
}

// TestISVStreamLeader: three replicas subscribe to DingTalk Stream for a suite, one at a time; the
// leader killed, another takes the lease and keeps receiving tickets.
func TestISVStreamLeader(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	c := startISV(t, 3, true)
	ctx := t.Context()
	eventually(t, 30*time.Second, "one Stream connection", func() bool { return c.streamStats().Connections == 1 })
	first := leader(c.replicas)
	if first == nil {
		t.Fatal("no replica says it leads")
	}

	publish := func() string {
		var res fakedingtalk.PushResult
		c.fake.do(t, http.MethodPost, "isv/suites/"+isvSuite+"/stream/publish", fakedingtalk.ISVEvent{Type: "suite_ticket"}, &res)
		c.tickets = append(c.tickets, res.SuiteTicket)
		return res.SuiteTicket
	}
	stored := func() string {
		v, _ := c.redis.Do("HGET", "tokend:{saas}:suite_ticket", "value")
		return v
	}
	t1 := publish()
	eventually(t, 20*time.Second, "the first ticket stored", func() bool { return stored() == t1 })
	for _, r := range c.replicas {
		eventually(t, 40*time.Second, fmt.Sprintf("suite token on replica %d", r.i), func() bool {
			s := c.credential(ctx, r, "saas", token.AccessToken)
			return s.status == http.StatusOK && c.valid(fakedingtalk.KindSuiteToken, s.value)
		})
	}
	if n := c.streamStats().Connections; n != 1 {
		t.Fatalf("%d Stream connections from three replicas, want 1", n)
	}

	first.proc.signal(t, syscall.SIGKILL)
	first.proc.wait(t, 10*time.Second)
	var rest []*replica
	for _, r := range c.replicas {
		if r != first {
			rest = append(rest, r)
		}
	}
	eventually(t, 60*time.Second, "another replica leads with a connection", func() bool {
		return leader(rest) != nil && c.streamStats().Connections == 1
	})
	t2 := publish()
	eventually(t, 20*time.Second, "the next ticket stored by the new leader", func() bool { return stored() == t2 })
	if t2 == t1 {
		t.Fatal("the fake minted the same ticket twice")
	}
}
