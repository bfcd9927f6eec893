package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/redistest"
)

// output is a concurrency-safe writer whose lines a test can wait for.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	cond *sync.Cond
}

func newOutput() *output { o := &output{}; o.cond = sync.NewCond(&o.mu); return o }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cond.Broadcast()
	return o.buf.Write(p)
}

func (o *output) String() string { o.mu.Lock(); defer o.mu.Unlock(); return o.buf.String() }

// await waits until the output matches re and returns the first submatch (or the whole match).
func (o *output) await(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { o.mu.Lock(); o.cond.Broadcast(); o.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(10 * time.Second)
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		if m := re.FindStringSubmatch(o.buf.String()); m != nil {
			return m[len(m)-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no output matching %s; got:\n%s", re, o.buf.String())
		}
		o.cond.Wait()
	}
}

// started runs tokend with args until the test ends; it returns the outputs and a stop function
// that ends the run and returns its error.
func started(t *testing.T, args []string, getenv func(string) string) (stdout, stderr *output, stop func() error) {
	t.Helper()
	stdout, stderr, stop, _ = startedReloadable(t, args, getenv)
	return stdout, stderr, stop
}

// startedReloadable is started that also returns reload, which makes the running tokend reload its
// configuration as SIGHUP does in production, without a signal.
func startedReloadable(t *testing.T, args []string, getenv func(string) string) (stdout, stderr *output, stop func() error, reload func()) {
	t.Helper()
	stdout, stderr = newOutput(), newOutput()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	reloads := make(chan os.Signal)
	go func() { done <- run(ctx, args, getenv, stdout, stderr, reloads) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	reload = func() {
		t.Helper()
		select {
		case reloads <- syscall.SIGHUP:
		case err := <-done:
			done <- err
			t.Fatalf("reload: tokend is no longer running: %v", err)
		}
	}
	return stdout, stderr, stop, reload
}

func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDevModeAsANewUserTriesIt follows the README: start -dev, run the curl it prints.
func TestDevModeAsANewUserTriesIt(t *testing.T) {
	stdout, stderr, stop := started(t, []string{"-dev", "-listen", "127.0.0.1:0", "-ops-listen", "127.0.0.1:0"}, func(string) string { return "" })
	key := stdout.await(t, regexp.MustCompile(`client key: (\S+)`))
	url := stdout.await(t, regexp.MustCompile(`curl -H '[^']*' (http://\S+)`))
	if !strings.Contains(stderr.await(t, regexp.MustCompile(`.*FAKE DingTalk.*`)), "FAKE") {
		t.Fatal("dev mode does not say its DingTalk is fake")
	}
	code, body := get(t, url, key)
	if code != 200 || !strings.Contains(body, `"access_token":"fake-at-`) {
		t.Fatalf("the README's curl got %d %s", code, body)
	}
	code, body = get(t, strings.Replace(url, "access_token", "jsapi_ticket", 1), key)
	if code != 200 || !strings.Contains(body, `"ticket":"fake-jt-`) {
		t.Fatalf("demo ticket: %d %s", code, body)
	}
	// The proxy curl printed next to it: tokend calls the (fake) DingTalk with the demo app's token.
	proxied := stdout.await(t, regexp.MustCompile(`curl -H '[^']*' -d '[^']*' (http://\S+/proxy/\S+)`))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, proxied, strings.NewReader(`{"userid":"manager"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(raw), `"errcode":0`) || !strings.Contains(string(raw), "Fake User manager") {
		t.Fatalf("the proxy curl got %d %s", resp.StatusCode, raw)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v after shutdown, want nil", err)
	}
}

func TestInvalidConfigPrintsEveryProblemAndExitsTwo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	bad := "listen: nonsense\napps:\n  - name: Bad Name\n    type: dingtalk\n    client_id: x\n    client_secret: y\n    surprise: 1\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-config", path}, func(string) string { return "" }, &stdout, &stderr, nil)
	var code exitCode
	if !errors.As(err, &code) || code != 2 {
		t.Fatalf("err = %v, want exit status 2", err)
	}
	for _, want := range []string{"listen", "apps[0].name", "apps[0].surprise"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not name %s:\n%s", want, stderr.String())
		}
	}
}

func TestKeygenPrintsAKeyAndItsHash(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"keygen"}, os.Getenv, &stdout, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	key := regexp.MustCompile(`(tkd_\S+)`).FindString(stdout.String())
	sum := config.HashKey(key)
	if key == "" || !strings.Contains(stdout.String(), "key_sha256: "+hex.EncodeToString(sum[:])) {
		t.Fatalf("keygen printed:\n%s", stdout.String())
	}
}

// deployment is a fake DingTalk, a real Redis and a config file for tokend with two apps.
type deployment struct {
	fake     *fakedingtalk.Server
	url      string // the fake's base URL
	redis    *redistest.Server
	path     string
	key      string
	secrets  []string
	writeCfg func(apps string, clientApps string)
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{fake: fakedingtalk.New(fakedingtalk.Options{}), redis: redistest.Start(t), key: "tkd_test-client-key-0123456789"}
	srv := httptest.NewServer(d.fake)
	t.Cleanup(srv.Close)
	d.url = srv.URL
	d.secrets = []string{"SECRET-crm-4f1d2e9a7c", "SECRET-hr-8b3c6d0e1f"}
	d.fake.AddApp("dingcrm", d.secrets[0])
	d.fake.AddApp("dinghr", d.secrets[1])
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hr.secret"), []byte(d.secrets[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.path = filepath.Join(dir, "tokend.yaml")
	sum := config.HashKey(d.key)
	d.writeCfg = func(apps, clientApps string) {
		cfg := fmt.Sprintf(`listen: 127.0.0.1:0
ops_listen: 127.0.0.1:0
store:
  redis:
    url: %s
dingtalk:
  api_base: %s
  oapi_base: %s
apps:
%s
clients:
  - name: billing
    key_sha256: %s
    apps: %s
`, d.redis.URL(), srv.URL, srv.URL, apps, hex.EncodeToString(sum[:]), clientApps)
		if err := os.WriteFile(d.path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d.writeCfg(`  - name: crm
    type: dingtalk
    client_id: dingcrm
    client_secret_env: CRM_SECRET
    jsapi_ticket: true
    corp_id: dingcorp
    agent_id: "1000"
  - name: hr
    type: dingtalk
    client_id: dinghr
    token_api: legacy
    client_secret_file: `+filepath.Join(dir, "hr.secret"), "[crm, hr]")
	return d
}

func (d *deployment) getenv(name string) string {
	if name == "CRM_SECRET" {
		return d.secrets[0]
	}
	return ""
}

var (
	apiAddr = regexp.MustCompile(`"msg":"tokend serving".*?"listen":"([^"]+)"`)
	opsAddr = regexp.MustCompile(`"msg":"tokend serving".*?"ops_listen":"([^"]+)"`)
)

func TestServesFromRealRedisAndLeaksNoSecretOrToken(t *testing.T) {
	d := newDeployment(t)
	d.fake.SetFault("dinghr", fakedingtalk.Fault{Mode: fakedingtalk.FaultBadCredentials})
	stdout, stderr, stop := started(t, []string{"-config", d.path}, d.getenv)
	api := "http://" + stderr.await(t, apiAddr)
	ops := "http://" + stderr.await(t, opsAddr)

	code, body := get(t, api+"/v1/apps/crm/access_token", d.key)
	if code != 200 || !strings.Contains(body, `"access_token":"fake-at-`) {
		t.Fatalf("crm token: %d %s", code, body)
	}
	if code, _ := get(t, api+"/v1/apps/crm/access_token", "tkd_wrong"); code != 401 {
		t.Fatalf("wrong key: %d, want 401", code)
	}
	if code, _ := get(t, api+"/v1/apps/crm/access_token", ""); code != 401 {
		t.Fatalf("missing key: %d, want 401", code)
	}
	code, body = get(t, api+"/v1/apps/hr/access_token", d.key)
	if code != 502 || !strings.Contains(body, `"upstream_code":"40096"`) {
		t.Fatalf("hr with rejected credentials: %d %s, want 502 with upstream_code 40096", code, body)
	}
	// Ready once the warm-up has tried everything; hr shows as failing without making it unready.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = get(t, ops+"/readyz", "")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, `{"name":"hr","access_token":{"state":"failing","upstream_code":"40096"}}`) || !strings.Contains(body, `"store":"ok"`) {
		t.Fatalf("readyz body: %s", body)
	}
	_, metrics := get(t, ops+"/metrics", "")
	for _, want := range []string{`tokend_build_info{version="dev"} 1`, `tokend_upstream_requests_total{app="hr",code="40096",kind="access_token"}`,
		`tokend_http_requests_total{code="200",route="/v1/apps/{app}/access_token"}`, `tokend_store_up 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	// The audit log has one JSON line per security-relevant event.
	for _, re := range []string{
		`\{"time":"[^"]+","level":"INFO","msg":"audit","audit":true,"event":"auth_failure","result":"unauthenticated","remote":"127\.0\.0\.1:\d+"\}`,
		`"msg":"audit","audit":true,"event":"refresh","result":"failure","app":"hr","kind":"access_token","upstream_code":"40096"\}`,
		`"msg":"audit","audit":true,"event":"refresh","result":"success","app":"crm","kind":"access_token","token_fingerprint":"[0-9a-f]{12}","changed":true\}`,
	} {
		if !regexp.MustCompile(re).MatchString(stderr.String()) {
			t.Errorf("no audit line matching %s", re)
		}
	}

	// Nothing secret in anything tokend wrote or served to ops.
	everything := stdout.String() + stderr.String() + metrics + body
	for _, s := range d.secrets {
		if strings.Contains(everything, s) {
			t.Errorf("a client secret appears in tokend's output")
		}
	}
	for _, is := range d.fake.Issued() {
		if strings.Contains(everything, is.Value) {
			t.Errorf("an issued %s appears in tokend's output", is.Kind)
		}
	}
	if strings.Contains(everything, d.key) {
		t.Error("the client key appears in tokend's output")
	}
}

func TestReloadAddsAppsReplacesClientsAndRejectsInvalidConfig(t *testing.T) {
	d := newDeployment(t)
	_, stderr, stop, reload := startedReloadable(t, []string{"-config", d.path}, d.getenv)
	api := "http://" + stderr.await(t, apiAddr)
	if code, _ := get(t, api+"/v1/apps/crm/access_token", d.key); code != 200 {
		t.Fatalf("before reload: %d", code)
	}
	tokenCalls := d.fake.Calls("dingcrm").Token

	// An invalid file is rejected and the running configuration kept.
	if err := os.WriteFile(d.path, []byte("apps: []\nunknown: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload()
	stderr.await(t, regexp.MustCompile(`"event":"reload","result":"rejected"`))
	if code, _ := get(t, api+"/v1/apps/crm/access_token", d.key); code != 200 {
		t.Fatalf("after a rejected reload: %d, want 200", code)
	}

	// A valid file: crm only, and the client may no longer use hr.
	d.writeCfg(`  - name: crm
    type: dingtalk
    client_id: dingcrm
    client_secret_env: CRM_SECRET`, "[crm]")
	reload()
	stderr.await(t, regexp.MustCompile(`"event":"reload","result":"applied","apps":1,"clients":1`))
	if code, _ := get(t, api+"/v1/apps/hr/access_token", d.key); code != 403 {
		t.Fatalf("hr after reload: %d, want 403", code)
	}
	if code, _ := get(t, api+"/v1/apps/crm/access_token", d.key); code != 200 {
		t.Fatalf("crm after reload: %d", code)
	}
	if got := d.fake.Calls("dingcrm").Token; got != tokenCalls {
		t.Fatalf("reload refetched a valid token: %d calls, want %d", got, tokenCalls)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func fakeURL(_ *testing.T, d *deployment) string { return d.url }
