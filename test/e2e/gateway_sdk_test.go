package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGatewayNodeSDK calls tokend's gateway listener with DingTalk's official Node.js SDK
// (@alicloud/dingtalk, test/sdk/node), configured only with the gateway as its endpoint and the
// tokend headers as per-request common headers: the call reaches the fake DingTalk with the app's
// token and DingTalk's answer comes back as the SDK expects it; a wrong key is refused.
func TestGatewayNodeSDK(t *testing.T) {
	t.Parallel() // own processes, Redis and fake: independent of the other tests
	requireProcesses(t, "the SDK test installs DingTalk's Node.js SDK and runs real processes", "redis-server", "node", "npm")
	sdk := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "gateway.js"} {
		b, err := os.ReadFile(filepath.Join("..", "sdk", "node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sdk, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	npm := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	npm.Dir = sdk
	if out, err := npm.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (the pinned SDK in test/sdk/node): %v\n%s", err, out)
	}

	bins := build(t)
	c := startCluster(t, bins, proxySpec(1))
	c.waitReady()
	a := c.apps[0]
	before := c.fake.calls(t)[a.clientID]

	node := exec.CommandContext(ctx, "node", "gateway.js")
	node.Dir = sdk
	node.Env = append(os.Environ(), "GW="+strings.TrimPrefix(c.replicas[0].gateway, "http://"), "TOKEND_KEY="+c.clientKey, "APP="+a.name)
	out, err := node.CombinedOutput()
	if err != nil {
		t.Fatalf("node gateway.js: %v\n%s", err, strings.ReplaceAll(string(out), c.clientKey, "[key]"))
	}
	type result struct {
		Call   string         `json:"call"`
		Status int            `json:"status"`
		Body   map[string]any `json:"body"`
		Error  map[string]any `json:"error"`
	}
	results := map[string]result{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Call != "" {
			results[r.Call] = r
		}
	}
	if ok := results["ok"]; ok.Status != 200 || ok.Body["unionId"] != "manager" {
		t.Errorf("the SDK's call through the gateway: %+v", ok)
	}
	if bad := results["wrong_key"]; bad.Status != 401 || bad.Error["code"] != "unauthenticated" {
		t.Errorf("the SDK's call with a wrong key: %+v", bad)
	}
	if after := c.fake.calls(t)[a.clientID]; after.API != before.API+1 {
		t.Errorf("DingTalk got %d calls with the app's token, want 1", after.API-before.API)
	}
}
