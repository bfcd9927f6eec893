package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/redistest"
)

// The security tests run tokend as the other tests in this package do (run with a real Redis and a
// fake DingTalk) with distinctive secrets, keys and tokens, then search everything tokend wrote or
// served, and everything in Redis, for them. None of them is parallel: each runs a whole tokend.

// Client keys of the security deployment. They share keyStem, which nothing else holds.
const (
	keyStem      = "tkd_sec7"
	billingKey   = "tkd_sec7-billing-key-5c1e9a0b" // crm, hr, org, flaky
	adminKey     = "tkd_sec7-admin-key-2f8d4b6c"   // all apps
	narrowKey    = "tkd_sec7-narrow-key-7a3e1d9f"  // crm only
	wrongKey     = "tkd_sec7-wrong-key-0b9c8d7e"   // configured nowhere
	reportedJunk = "REPORTED-junk-token-4e5f6a7b"  // an invalidation report of a value never issued
)

// secDeployment is newDeployment's fake DingTalk and Redis with a configuration of four apps (an
// internal app with a ticket and its secret in the environment, a legacy internal app with its secret
// in a file, an organization-authorized app with its secret in a file, and an internal app with a
// literal secret), three clients and debug logging: the most a log could show.
type secDeployment struct {
	*deployment
	dir     string
	secrets map[string]string // name -> value: every secret tokend is or was given
	keys    []string
	bodies  []string // every response body the test received
}

func newSecDeployment(t *testing.T) *secDeployment {
	t.Helper()
	d := &secDeployment{deployment: newDeployment(t), dir: t.TempDir()}
	d.secrets = map[string]string{
		"crm":   d.deployment.secrets[0],
		"hr":    d.deployment.secrets[1],
		"org":   "SECRET-org-corp-c0rp5e3c7e",
		"flaky": "SECRET-flaky-literal-5d6e7f8a",
		"redis": "SECRET-redis-password-3b4c5d6e",
	}
	d.keys = []string{billingKey, adminKey, narrowKey, wrongKey, reportedJunk}
	d.fake.AddCorp("dingorg", d.secrets["org"])
	d.fake.AddApp("dingflaky", d.secrets["flaky"])
	d.writeSecret(t, "hr.secret", d.secrets["hr"])
	d.writeSecret(t, "org.secret", d.secrets["org"])
	// tokend logs in to Redis as its own user with a password from a file; the default user stays
	// open so that the test can read everything with redistest's Do.
	if _, err := d.redis.Do("ACL", "SETUSER", "tokend", "on", ">"+d.secrets["redis"], "~*", "&*", "+@all"); err != nil {
		t.Fatal(err)
	}
	d.writeSecret(t, "redis.secret", d.secrets["redis"])
	d.writeConfig(t, "")
	return d
}

// writeSecret writes a secret file as an operator should: one line, readable by its owner only.
func (d *secDeployment) writeSecret(t *testing.T, name, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.dir, name), []byte(value+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
}

// writeConfig writes the security deployment's configuration, with extra appended to the first app.
func (d *secDeployment) writeConfig(t *testing.T, extra string) {
	t.Helper()
	hash := func(key string) string { sum := config.HashKey(key); return hex.EncodeToString(sum[:]) }
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
ops_listen: 127.0.0.1:0
log:
  level: debug
  format: json
store:
  redis:
    url: %[1]s
    password_file: %[10]s
upstream:
  timeout: 2s
  failure_retry: 1s
dingtalk:
  api_base: %[2]s
  oapi_base: %[2]s
apps:
  - name: crm
    type: dingtalk
    client_id: dingcrm
    client_secret_env: CRM_SECRET
    jsapi_ticket: true
    corp_id: dingcorp
    agent_id: "1000"%[3]s
  - name: hr
    type: dingtalk
    client_id: dinghr
    token_api: legacy
    client_secret_file: %[4]s
  - name: org
    type: dingtalk_corp
    corp_id: dingorg
    corp_secret_file: %[5]s
  - name: flaky
    type: dingtalk
    client_id: dingflaky
    client_secret: %[6]s
clients:
  - name: billing
    key_sha256: %[7]s
    apps: [crm, hr, org, flaky]
    proxy:
      crm: ["* oapi:/topapi/**", "GET api:/v1.0/contact/users/*", "POST oapi:/media/upload"]
  - name: admin
    key_sha256: %[8]s
    apps: ["*"]
  - name: narrow
    key_sha256: %[9]s
    apps: [crm]
`, strings.Replace(d.redis.URL(), "redis://", "redis://tokend@", 1), d.url, extra, filepath.Join(d.dir, "hr.secret"), filepath.Join(d.dir, "org.secret"), d.secrets["flaky"],
		hash(billingKey), hash(adminKey), hash(narrowKey), filepath.Join(d.dir, "redis.secret"))
	if err := os.WriteFile(d.path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// call makes one request with a fresh connection and records the body.
func (d *secDeployment) call(t *testing.T, method, url, key, body string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	d.bodies = append(d.bodies, string(b))
	return resp.StatusCode, resp.Header, string(b)
}

// await polls url until it answers want (real time is what the tokend under test runs on).
func (d *secDeployment) await(t *testing.T, url, key string, want int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _, body := d.call(t, http.MethodGet, url, key, "")
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s, want %d", url, code, shown(body), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *secDeployment) getenv(name string) string {
	if name == "CRM_SECRET" {
		return d.secrets["crm"]
	}
	return ""
}

// forbidden returns what must never appear outside a 200 body: every secret and client key, and
// every value DingTalk issued.
func (d *secDeployment) forbidden() (secrets, tokens []string) {
	for _, s := range d.secrets {
		secrets = append(secrets, s)
	}
	secrets = append(secrets, d.keys...)
	for _, is := range d.fake.Issued() {
		tokens = append(tokens, is.Value)
	}
	return secrets, tokens
}

// checkNoLeak fails when text, named what, holds a secret, a key or (unless tokensOK) a token.
// Messages name the kind of value found, never the value.
func checkNoLeak(t *testing.T, what, text string, secrets, tokens []string, tokensOK bool) {
	t.Helper()
	for _, s := range secrets {
		// The whole value, and its distinctive second half alone (a truncated quote is a leak too).
		if strings.Contains(text, s) || strings.Contains(text, s[len(s)/2:]) {
			t.Errorf("%s holds a secret or a client key (one of %d)", what, len(secrets))
		}
	}
	if strings.Contains(text, keyStem) {
		t.Errorf("%s holds a client key", what)
	}
	if tokensOK {
		return
	}
	for _, tok := range tokens {
		if strings.Contains(text, tok) || strings.Contains(text, tok[max(0, len(tok)-16):]) {
			t.Errorf("%s holds an issued token or ticket", what)
		}
	}
}

// carriesCredential reports whether body is a 200 document that carries a token or a ticket by
// design (a signature document carries neither, but is computed from the ticket).
func carriesCredential(body string) bool {
	return strings.HasPrefix(body, `{"app":`) && (strings.Contains(body, `"access_token":"`) || strings.Contains(body, `"ticket":"`))
}

// shown is body as a failure message may show it: a document carrying a token or ticket is not shown.
func shown(body string) string {
	if carriesCredential(body) {
		return "<a token or ticket document>"
	}
	return body
}

// checkRedis scans every key of the deployment's Redis: no secret or client key in any key, field or
// value; tokens are there (Redis is how replicas share them), so wantToken must be.
func checkRedis(t *testing.T, r *redistest.Server, secrets []string, wantToken string) {
	t.Helper()
	keys, err := r.Do("KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, k := range strings.Split(keys, "\n") {
		if k == "" {
			continue
		}
		typ, err := r.Do("TYPE", k)
		if err != nil {
			t.Fatal(err)
		}
		var v string
		switch typ {
		case "string":
			v, err = r.Do("GET", k)
		case "hash":
			v, err = r.Do("HGETALL", k)
		case "list":
			v, err = r.Do("LRANGE", k, "0", "-1")
		case "set":
			v, err = r.Do("SMEMBERS", k)
		case "zset":
			v, err = r.Do("ZRANGE", k, "0", "-1", "WITHSCORES")
		case "none":
			continue // expired between KEYS and TYPE
		default:
			t.Errorf("redis key %q has type %s, which this test cannot read", k, typ)
		}
		if err != nil {
			t.Fatalf("read redis key %q: %v", k, err)
		}
		fmt.Fprintf(&all, "%s\n%s\n", k, v)
	}
	if all.Len() == 0 {
		t.Fatal("redis holds no keys at all")
	}
	checkNoLeak(t, "redis", all.String(), secrets, nil, true)
	if wantToken != "" && !strings.Contains(all.String(), wantToken) {
		t.Error("redis does not hold the current access token: the scan misses where tokens are kept")
	}
}

// TestNothingLeaksSecretsTokensOrKeys runs success, rejected credentials, a refused IP, a busy
// DingTalk, invalidation with its cool-down, signatures, wrong keys, and reloads (a rejected one and
// a secret rotation), then checks that no secret, key, token or ticket appears in logs (audit lines
// included), metrics, /readyz, /healthz or any error body, and that Redis holds tokens but no secret.
func TestNothingLeaksSecretsTokensOrKeys(t *testing.T) {
	d := newSecDeployment(t)
	d.fake.SetFault("dinghr", fakedingtalk.Fault{Mode: fakedingtalk.FaultBadCredentials})
	d.fake.SetFault("dingorg", fakedingtalk.Fault{Mode: fakedingtalk.FaultIPNotAllowed})
	d.fake.SetFault("dingflaky", fakedingtalk.Fault{Mode: fakedingtalk.FaultBusy})
	stdout, stderr, stop, reload := startedReloadable(t, []string{"-config", d.path}, d.getenv)
	api := "http://" + stderr.await(t, apiAddr)
	ops := "http://" + stderr.await(t, opsAddr)
	d.await(t, ops+"/readyz", "", http.StatusOK)

	// Success: the token and the ticket.
	code, _, body := d.call(t, "GET", api+"/v1/apps/crm/access_token", billingKey, "")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("crm token: %d", code)
	}
	if code, _, _ := d.call(t, "GET", api+"/v1/apps/crm/jsapi_ticket", narrowKey, ""); code != 200 {
		t.Fatalf("crm ticket: %d", code)
	}
	// Rejected credentials, a refused IP (DingTalk's message names the IP), a busy DingTalk.
	for _, c := range []struct {
		app    string
		status int
		code   string
	}{{"hr", 502, `"upstream_code":"40096"`}, {"org", 502, `"upstream_code":"60020"`}, {"flaky", 503, `"code":"upstream_unavailable"`}} {
		code, _, body := d.call(t, "GET", api+"/v1/apps/"+c.app+"/access_token", billingKey, "")
		if code != c.status || !strings.Contains(body, c.code) {
			t.Errorf("%s: %d %s, want %d with %s", c.app, code, shown(body), c.status, c.code)
		}
	}
	// Wrong keys, in the header and where they do not belong.
	for _, c := range []struct{ name, url, auth string }{
		{"no key", api + "/v1/apps/crm/access_token", ""},
		{"unknown key", api + "/v1/apps/crm/access_token", "Bearer " + wrongKey},
		{"basic scheme", api + "/v1/apps/crm/access_token", "Basic " + billingKey},
		{"key without scheme", api + "/v1/apps/crm/access_token", billingKey},
		{"key in the query", api + "/v1/apps/crm/access_token?access_token=" + billingKey + "&key=" + wrongKey, ""},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", c.url, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d.bodies = append(d.bodies, string(b))
		if resp.StatusCode != 401 {
			t.Errorf("%s: %d, want 401", c.name, resp.StatusCode)
		}
	}
	if code, _, _ := d.call(t, "GET", api+"/v1/apps/hr/access_token", narrowKey, ""); code != 403 {
		t.Errorf("another client's app: %d, want 403", code)
	}
	// Signatures: a good one, and a bad URL whose query must not be echoed.
	if code, _, body := d.call(t, "POST", api+"/v1/apps/crm/jsapi_signature", billingKey,
		`{"url":"https://h5.example.com/p?code=`+reportedJunk+`#frag"}`); code != 200 || !strings.Contains(body, `"signature":"`) {
		t.Errorf("signature: %d %s", code, body)
	}
	if code, _, body := d.call(t, "POST", api+"/v1/apps/crm/jsapi_signature", billingKey,
		`{"url":"ftp://h5.example.com/p?code=`+reportedJunk+`"}`); code != 400 || strings.Contains(body, "REPORTED") {
		t.Errorf("bad signature URL: %d %s, want 400 without the URL", code, body)
	}
	// Invalidation: the current token (DingTalk renews it and hands it back), the same again within the
	// cool-down (429), and a value never issued (the current token comes back, nothing is logged).
	inv := `{"access_token":"` + tok.AccessToken + `"}`
	if code, _, _ := d.call(t, "POST", api+"/v1/apps/crm/access_token/invalidate", billingKey, inv); code != 200 {
		t.Errorf("invalidate: %d, want 200", code)
	}
	if code, h, _ := d.call(t, "POST", api+"/v1/apps/crm/access_token/invalidate", billingKey, inv); code != 429 || h.Get("Retry-After") == "" {
		t.Errorf("invalidate again: %d, want 429 with Retry-After", code)
	}
	if code, _, body := d.call(t, "POST", api+"/v1/apps/crm/access_token/invalidate", billingKey, `{"access_token":"`+reportedJunk+`"}`); code != 200 || !strings.Contains(body, tok.AccessToken) {
		t.Errorf("invalidate a value never issued: %d, want 200 with the current token", code)
	}

	// A rejected reload, whose file holds a literal secret next to the problems.
	good, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	d.secrets["literal"] = "SECRET-rejected-literal-9e8d7c6b"
	d.writeConfig(t, "\n    client_secret: "+d.secrets["literal"]+"\n    surprise: "+d.secrets["literal"])
	reload()
	stderr.await(t, regexp.MustCompile(`reload rejected`))
	// Secret rotation: DingTalk gets hr's new secret, so does the file; the reload retries hr at once.
	if err := os.WriteFile(d.path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	d.secrets["hr-rotated"] = "SECRET-hr-rotated-6a7b8c9d"
	d.fake.AddApp("dinghr", d.secrets["hr-rotated"])
	d.fake.SetFault("dinghr", fakedingtalk.Fault{})
	if err := os.Remove(filepath.Join(d.dir, "hr.secret")); err != nil {
		t.Fatal(err)
	}
	d.writeSecret(t, "hr.secret", d.secrets["hr-rotated"])
	reload()
	stderr.await(t, regexp.MustCompile(`configuration reloaded`))
	d.await(t, api+"/v1/apps/hr/access_token", billingKey, 200)

	_, _, readyz := d.call(t, "GET", ops+"/readyz", "", "")
	_, _, healthz := d.call(t, "GET", ops+"/healthz", "", "")
	_, _, metrics := d.call(t, "GET", ops+"/metrics", "", "")
	if !strings.Contains(readyz, `"name":"org"`) || !strings.Contains(metrics, "tokend_http_requests_total") {
		t.Fatalf("readyz or metrics lack what they should show:\n%s", readyz)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := stdout.String() + stderr.String()
	if !strings.Contains(logs, fakedingtalk.DefaultClientIP) {
		t.Error("the logs do not name the IP DingTalk refused: an operator could not fix the allowlist")
	}
	if !strings.Contains(logs, `"audit":true`) {
		t.Error("no audit line in the logs")
	}

	secrets, tokens := d.forbidden()
	if len(tokens) < 3 {
		t.Fatalf("the fake issued %d values: the scenarios did not run", len(tokens))
	}
	checkNoLeak(t, "the logs", logs, secrets, tokens, false)
	checkNoLeak(t, "/metrics", metrics, secrets, tokens, false)
	checkNoLeak(t, "/readyz", readyz, secrets, tokens, false)
	checkNoLeak(t, "/healthz", healthz, secrets, tokens, false)
	for _, b := range d.bodies {
		// 200 bodies carry tokens by design; error bodies must not, and no body carries a secret.
		checkNoLeak(t, "a response body", b, secrets, tokens, carriesCredential(b))
	}
	checkRedis(t, d.redis, secrets, tok.AccessToken)
}

// TestNothingLeaksDuringAnIPBan bans the egress IP (DingTalk's HTML block page) at start-up: clients
// get 503 with Retry-After, and nothing leaks while every call to DingTalk is paused.
func TestNothingLeaksDuringAnIPBan(t *testing.T) {
	d := newSecDeployment(t)
	d.fake.SetFault("", fakedingtalk.Fault{Mode: fakedingtalk.FaultBanHTML})
	stdout, stderr, stop := started(t, []string{"-config", d.path}, d.getenv)
	api := "http://" + stderr.await(t, apiAddr)
	ops := "http://" + stderr.await(t, opsAddr)
	readyz := d.await(t, ops+"/readyz", "", http.StatusOK)
	code, h, _ := d.call(t, "GET", api+"/v1/apps/crm/access_token", adminKey, "")
	if code != 503 || h.Get("Retry-After") == "" {
		t.Fatalf("during a ban: %d (Retry-After %q), want 503 with Retry-After", code, h.Get("Retry-After"))
	}
	calls := d.fake.TotalCalls()
	for _, app := range []string{"hr", "org", "flaky", "crm"} {
		d.call(t, "GET", api+"/v1/apps/"+app+"/access_token", adminKey, "")
	}
	if got := d.fake.TotalCalls(); got != calls {
		t.Errorf("client requests during a ban made %d calls to DingTalk, want 0", got-calls)
	}
	_, _, metrics := d.call(t, "GET", ops+"/metrics", "", "")
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	secrets, tokens := d.forbidden()
	checkNoLeak(t, "the logs", stdout.String()+stderr.String(), secrets, tokens, false)
	checkNoLeak(t, "/metrics", metrics, secrets, tokens, false)
	checkNoLeak(t, "/readyz", readyz, secrets, tokens, false)
	for _, b := range d.bodies {
		checkNoLeak(t, "a response body", b, secrets, tokens, false)
	}
	checkRedis(t, d.redis, secrets, "")
}

// rawResponse is what came back on a raw connection.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// rawExchange writes raw on a new connection to addr and reads one response. It may be called from
// any goroutine.
func rawExchange(addr, raw string) (rawResponse, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return rawResponse{}, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		return rawResponse{}, err
	}
	if _, err := io.WriteString(c, raw); err != nil {
		return rawResponse{}, err
	}
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		return rawResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}, err
}

// rawRequest builds a raw HTTP/1.1 request that closes its connection.
func rawRequest(method, target, key string, headers []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: tokend.test\r\nConnection: close\r\n", method, target)
	if key != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", key)
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

// TestHostileClients sends tokend malformed, oversized and tricky requests, header floods, and
// connections that stall: every request gets a clear 4xx (never a 5xx, never a token it should
// not get), stalled connections are closed within the server's timeouts, and once every connection
// is gone the goroutine count is back where it was.
func TestHostileClients(t *testing.T) {
	d := newSecDeployment(t)
	_, stderr, stop := started(t, []string{"-config", d.path}, d.getenv)
	addr := stderr.await(t, apiAddr)
	ops := "http://" + stderr.await(t, opsAddr)
	d.await(t, ops+"/readyz", "", http.StatusOK)
	d.await(t, "http://"+addr+"/v1/apps/crm/access_token", narrowKey, 200)
	before := settledGoroutines(t)

	t.Run("bad requests", func(t *testing.T) { badRequests(t, d, addr) })
	t.Run("header floods", func(t *testing.T) { headerFloods(t, addr) })
	t.Run("slow clients", func(t *testing.T) { slowClients(t, addr) })

	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+5 {
			break
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines after the hostile clients left, %d before:\n%s", n, before, buf.String())
		}
		time.Sleep(20 * time.Millisecond) // the server's connection goroutines end in real time
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	secrets, tokens := d.forbidden()
	checkNoLeak(t, "the logs", stderr.String(), secrets, tokens, false)
}

// settledGoroutines returns the goroutine count once it has stopped changing for a moment.
func settledGoroutines(t *testing.T) int {
	t.Helper()
	http.DefaultClient.CloseIdleConnections()
	last, stable := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(5 * time.Second); stable < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // sampling a count that settles in real time
		if n := runtime.NumGoroutine(); n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
	return last
}

func badRequests(t *testing.T, d *secDeployment, addr string) {
	big := `{"access_token":"` + strings.Repeat("a", 70<<10) + `"}`
	cases := []struct {
		name string
		raw  string
		want []int // acceptable statuses
		code string
	}{
		// Bodies.
		{"body over 64 KiB", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, big), []int{400}, "bad_request"},
		{"empty body", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, ""), []int{400}, "bad_request"},
		{"truncated JSON", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `{"access_token":`), []int{400}, "bad_request"},
		{"array", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `[]`), []int{400}, "bad_request"},
		{"string", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `"x"`), []int{400}, "bad_request"},
		{"null", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `null`), []int{400}, "bad_request"},
		{"wrong type", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `{"access_token":1}`), []int{400}, "bad_request"},
		// Unknown members are ignored (clients may send more than tokend needs): a stale report.
		{"unknown member", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `{"access_token":"x","x":1}`), []int{200}, ""},
		{"timestamp of the wrong type", rawRequest("POST", "/v1/apps/crm/jsapi_signature", billingKey, nil, `{"url":"https://h5.example.com/","timestamp":{}}`), []int{400}, "bad_request"},
		{"nonce with the separator", rawRequest("POST", "/v1/apps/crm/jsapi_signature", billingKey, nil, `{"url":"https://h5.example.com/","nonce_str":"a&url=x"}`), []int{400}, "bad_request"},
		{"two documents", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, `{"access_token":"x"}{"access_token":"y"}`), []int{400}, "bad_request"},
		{"invalid UTF-8 in a member name", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, "{\"\xff\xfe\":\"x\"}"), []int{400}, "bad_request"},
		// encoding/json turns invalid UTF-8 into U+FFFD: a value never issued, answered with the current token.
		{"invalid UTF-8 in a value", rawRequest("POST", "/v1/apps/crm/access_token/invalidate", billingKey, nil, "{\"access_token\":\"\xff\xfe\"}"), []int{200, 400}, ""},
		{"invalid UTF-8 in a URL", rawRequest("POST", "/v1/apps/crm/jsapi_signature", billingKey, nil, "{\"url\":\"https://h5.example.com/\xff\"}"), []int{200, 400}, ""},
		{"invalid UTF-8 in a nonce", rawRequest("POST", "/v1/apps/crm/jsapi_signature", billingKey, nil, "{\"url\":\"https://h5.example.com/\",\"nonce_str\":\"\xff\"}"), []int{400}, "bad_request"},
		{"control character in a URL", rawRequest("POST", "/v1/apps/crm/jsapi_signature", billingKey, nil, `{"url":"https://h5.example.com/\u0000"}`), []int{400}, "bad_request"},
		{"bad chunked body", "POST /v1/apps/crm/access_token/invalidate HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer " + billingKey +
			"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", []int{400}, ""},
		// Paths. The billing client may use crm, hr, org and flaky; narrow only crm.
		{"dot segments", rawRequest("GET", "/v1/apps/../apps/crm/access_token", billingKey, nil, ""), []int{404}, "not_found"},
		{"dot segments to another app", rawRequest("GET", "/v1/apps/crm/../hr/access_token", narrowKey, nil, ""), []int{404}, "not_found"},
		{"encoded dot segments", rawRequest("GET", "/v1/apps/%2e%2e/hr/access_token", narrowKey, nil, ""), []int{404}, "not_found"},
		{"encoded app name", rawRequest("GET", "/v1/apps/%68r/access_token", narrowKey, nil, ""), []int{403}, "forbidden"},
		{"encoded app name, all-apps client", rawRequest("GET", "/v1/apps/cr%6d/access_token", adminKey, nil, ""), []int{404}, "app_not_found"},
		{"encoded slash in the app", rawRequest("GET", "/v1/apps/crm%2Fx/access_token", adminKey, nil, ""), []int{404}, "app_not_found"},
		{"double slash first", rawRequest("GET", "//v1/apps/crm/access_token", narrowKey, nil, ""), []int{404}, "not_found"},
		{"double slash inside", rawRequest("GET", "/v1/apps//crm/access_token", narrowKey, nil, ""), []int{404}, "not_found"},
		{"empty app", rawRequest("GET", "/v1/apps//access_token", adminKey, nil, ""), []int{403, 404}, ""},
		{"trailing slash", rawRequest("GET", "/v1/apps/crm/access_token/", narrowKey, nil, ""), []int{404}, "not_found"},
		{"upper case", rawRequest("GET", "/V1/APPS/crm/access_token", narrowKey, nil, ""), []int{404}, "not_found"},
		{"invalid UTF-8 in the path", rawRequest("GET", "/v1/apps/\xff\xfe/access_token", adminKey, nil, ""), []int{400, 404}, ""},
		{"encoded invalid UTF-8 in the path", rawRequest("GET", "/v1/apps/%ff%fe/access_token", adminKey, nil, ""), []int{404}, "app_not_found"},
		{"absolute form naming another app", rawRequest("GET", "http://evil.example/v1/apps/hr/access_token", narrowKey, nil, ""), []int{403}, "forbidden"},
		// The proxy (billing may proxy crm's /topapi/**, GET api:/v1.0/contact/users/* and the upload).
		{"proxied call", rawRequest("POST", "/v1/apps/crm/proxy/oapi/topapi/v2/user/get", billingKey, nil, `{"userid":"u1"}`), []int{200}, ""},
		{"proxied new-API call", rawRequest("GET", "/v1/apps/crm/proxy/api/v1.0/contact/users/u1", billingKey, []string{"X-Acs-Dingtalk-Access-Token: placeholder"}, ""), []int{200}, ""},
		{"proxy, dot segments", rawRequest("POST", "/v1/apps/crm/proxy/oapi/topapi/../gettoken", billingKey, nil, "{}"), []int{400}, "bad_request"},
		{"proxy, encoded dot segments", rawRequest("GET", "/v1/apps/crm/proxy/oapi/topapi/%2e%2E/gettoken?appkey=dingcrm", billingKey, nil, ""), []int{400}, "bad_request"},
		{"proxy, path parameter dot segments", rawRequest("GET", "/v1/apps/crm/proxy/oapi/topapi/..;/gettoken", billingKey, nil, ""), []int{400}, "bad_request"},
		{"proxy, encoded slash", rawRequest("GET", "/v1/apps/crm/proxy/api/v1.0/contact/users/a%2F..%2F..%2Foauth2", billingKey, nil, ""), []int{400}, "bad_request"},
		{"proxy, double slash", rawRequest("GET", "/v1/apps/crm/proxy/oapi/topapi//x", billingKey, nil, ""), []int{400}, "bad_request"},
		{"proxy, backslash", rawRequest("GET", "/v1/apps/crm/proxy/oapi/topapi/%5C..%5Cgettoken", billingKey, nil, ""), []int{400}, "bad_request"},
		{"proxy, no rule", rawRequest("GET", "/v1/apps/crm/proxy/oapi/gettoken?appkey=dingcrm", billingKey, nil, ""), []int{403}, "forbidden"},
		{"proxy, wrong method", rawRequest("DELETE", "/v1/apps/crm/proxy/api/v1.0/contact/users/u1", billingKey, nil, ""), []int{403}, "forbidden"},
		{"proxy, app without rules", rawRequest("POST", "/v1/apps/hr/proxy/oapi/topapi/x", billingKey, nil, "{}"), []int{403}, "forbidden"},
		{"proxy, client without rules", rawRequest("POST", "/v1/apps/crm/proxy/oapi/topapi/x", narrowKey, nil, "{}"), []int{403}, "forbidden"},
		{"proxy, unknown family", rawRequest("GET", "/v1/apps/crm/proxy/web/x", billingKey, nil, ""), []int{404}, "not_found"},
		{"proxy, declared body over max_body", "POST /v1/apps/crm/proxy/oapi/media/upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer " + billingKey +
			"\r\nContent-Length: 30000000\r\n\r\nxyz", []int{413}, "request_too_large"},
		{"proxy, bad chunked body", "POST /v1/apps/crm/proxy/oapi/media/upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer " + billingKey +
			"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", []int{400}, ""},
		// Unknown apps.
		{"unknown app, limited client", rawRequest("GET", "/v1/apps/nope/access_token", narrowKey, nil, ""), []int{403}, "forbidden"},
		{"unknown app, all-apps client", rawRequest("GET", "/v1/apps/nope/access_token", adminKey, nil, ""), []int{404}, "app_not_found"},
		{"ticket not enabled", rawRequest("GET", "/v1/apps/hr/jsapi_ticket", adminKey, nil, ""), []int{404}, "app_not_found"},
		{"signature, ticket not enabled", rawRequest("POST", "/v1/apps/hr/jsapi_signature", adminKey, nil, `{"url":"https://h5.example.com/"}`), []int{404}, "app_not_found"},
		// Wrong methods.
		{"DELETE a token", rawRequest("DELETE", "/v1/apps/crm/access_token", narrowKey, nil, ""), []int{405}, "method_not_allowed"},
		{"POST a token", rawRequest("POST", "/v1/apps/crm/access_token", narrowKey, nil, "{}"), []int{405}, "method_not_allowed"},
		{"GET invalidate", rawRequest("GET", "/v1/apps/crm/access_token/invalidate", narrowKey, nil, ""), []int{405}, "method_not_allowed"},
		{"PUT the list", rawRequest("PUT", "/v1/apps", narrowKey, nil, "{}"), []int{405}, "method_not_allowed"},
		{"made-up method", rawRequest("FROB", "/v1/apps", narrowKey, nil, ""), []int{405}, "method_not_allowed"},
		{"TRACE", rawRequest("TRACE", "/v1/apps/crm/access_token", narrowKey, nil, ""), []int{405}, "method_not_allowed"},
		// net/http answers "OPTIONS *" itself, 200 with an empty body, and never calls tokend.
		{"OPTIONS *", rawRequest("OPTIONS", "*", narrowKey, nil, ""), []int{200}, ""},
		// Keys.
		{"wrong key", rawRequest("GET", "/v1/apps/crm/access_token", wrongKey, nil, ""), []int{401}, "unauthenticated"},
		{"two Authorization headers", rawRequest("GET", "/v1/apps/crm/access_token", wrongKey, []string{"Authorization: Bearer " + narrowKey}, ""), []int{401}, "unauthenticated"},
		{"malformed header line holding a key", "GET /v1/apps HTTP/1.1\r\nHost: t\r\nAuthorization Bearer " + narrowKey + "\r\n\r\n", []int{400}, ""},
		// Protocol.
		{"no Host", "GET /v1/apps HTTP/1.1\r\nAuthorization: Bearer " + narrowKey + "\r\n\r\n", []int{400}, ""},
		{"garbage request line", "HELLO THERE\r\n\r\n", []int{400}, ""},
		// net/http's own answer; the only 5xx here, and not tokend's.
		{"unknown HTTP version", "GET /v1/apps HTTP/9.9\r\nHost: t\r\n\r\n", []int{400, 505}, ""},
		{"negative Content-Length", "POST /v1/apps/crm/access_token/invalidate HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", []int{400}, ""},
	}
	secrets, _ := d.forbidden()
	for _, c := range cases {
		resp, err := rawExchange(addr, c.raw)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		ok := false
		for _, w := range c.want {
			ok = ok || resp.status == w
		}
		if !ok {
			t.Errorf("%s: %d %s, want one of %v", c.name, resp.status, shown(resp.body), c.want)
			continue
		}
		if c.code != "" && !strings.Contains(resp.body, `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s, want code %s", c.name, resp.status, shown(resp.body), c.code)
		}
		// tokend's own answers (net/http answers protocol errors itself, in plain text) are JSON and
		// never cached; only a 200 carries a credential.
		if ct := resp.header.Get("Content-Type"); strings.Contains(ct, "json") {
			if !json.Valid([]byte(resp.body)) || resp.header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s: %d with body %q and Cache-Control %q", c.name, resp.status, shown(resp.body), resp.header.Get("Cache-Control"))
			}
		}
		_, tokens := d.forbidden()
		checkNoLeak(t, c.name+": the response", resp.body, secrets, tokens, carriesCredential(resp.body))
	}

	// A burst: every case again, four times over, from eight connections at once.
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				c := cases[i%len(cases)]
				if resp, err := rawExchange(addr, c.raw); err != nil || resp.status >= 500 && resp.status != 505 {
					t.Errorf("burst, %s: %d %v", c.name, resp.status, err)
				}
			}
		})
	}
	for i := range 4 * len(cases) {
		next <- i
	}
	close(next)
	wg.Wait()
}

func headerFloods(t *testing.T, addr string) {
	many := make([]string, 1000)
	for i := range many {
		many[i] = fmt.Sprintf("X-Flood-%04d: %s", i, strings.Repeat("f", 32))
	}
	some := make([]string, 100)
	for i := range some {
		some[i] = fmt.Sprintf("X-Some-%03d: s", i)
	}
	cases := []struct {
		name    string
		headers []string
		want    int
	}{
		{"a thousand headers", many, 431},
		{"one huge header", []string{"X-Huge: " + strings.Repeat("h", 40<<10)}, 431},
		{"a huge Authorization header", []string{"Authorization: Bearer " + strings.Repeat("k", 40<<10)}, 431},
		{"a huge cookie", []string{"Cookie: c=" + strings.Repeat("c", 40<<10)}, 431},
		{"a hundred small headers are fine", some, 200},
	}
	for _, c := range cases {
		resp, err := rawExchange(addr, rawRequest("GET", "/v1/apps/crm/access_token", narrowKey, c.headers, ""))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if resp.status != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.status, c.want)
		}
	}
}

// slowClients opens connections that stall in the headers, before any byte, or in the body, and
// checks the server closes each within its timeout (ReadHeaderTimeout 5 s for headers, ReadTimeout
// 10 s for the whole request; see newServer) plus slack. The body cases cover a route that reads
// its body, one that does not (net/http reads the rest after the handler), an unknown path and a
// chunked body: the body's bound must hold wherever a body comes.
func slowClients(t *testing.T, addr string) {
	const slack = 4 * time.Second
	srv := newServer(nil, time.Second, slog.New(slog.DiscardHandler))
	auth := "Host: t\r\nAuthorization: Bearer " + narrowKey + "\r\n"
	cases := []struct {
		name  string
		sent  string
		limit time.Duration
	}{
		{"nothing at all", "", srv.ReadHeaderTimeout},
		{"half a request line", "GET /v1/apps/crm/acc", srv.ReadHeaderTimeout},
		{"half the headers", "GET /v1/apps HTTP/1.1\r\nHost: tokend.test\r\nAuthorization: Bearer " + narrowKey[:8], srv.ReadHeaderTimeout},
		{"half the body", "POST /v1/apps/crm/access_token/invalidate HTTP/1.1\r\n" + auth +
			"Content-Length: 100\r\n\r\n{\"access_token\":", srv.ReadTimeout},
		{"half the body of a GET", "GET /v1/apps/crm/access_token HTTP/1.1\r\n" + auth +
			"Content-Length: 100\r\n\r\n{\"access_token\":", srv.ReadTimeout},
		{"half the body to an unknown path", "POST /v1/nowhere HTTP/1.1\r\n" + auth +
			"Content-Length: 100\r\n\r\n{\"access_token\":", srv.ReadTimeout},
		{"half a chunked body", "POST /v1/apps/crm/access_token/invalidate HTTP/1.1\r\n" + auth +
			"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"access_t", srv.ReadTimeout},
		// A proxied upload may take longer than ReadTimeout, but not stall for longer (proxy.BodyIdle).
		{"half a proxied upload", "POST /v1/apps/crm/proxy/oapi/media/upload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + billingKey +
			"\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("u", 100<<10), proxy.BodyIdle},
	}
	const perCase = 10
	var wg sync.WaitGroup
	errs := make(chan error, len(cases)*perCase)
	for _, c := range cases {
		for range perCase {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			wg.Go(func() {
				defer conn.Close()
				if _, err := io.WriteString(conn, c.sent); err != nil {
					errs <- fmt.Errorf("%s: write: %w", c.name, err)
					return
				}
				start := time.Now()
				// Whatever the server sends (nothing, or a 400 for the body), it must then close.
				_ = conn.SetReadDeadline(start.Add(c.limit + slack))
				_, err := io.Copy(io.Discard, conn)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					errs <- fmt.Errorf("%s: connection still open after %v", c.name, time.Since(start).Round(time.Millisecond))
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
