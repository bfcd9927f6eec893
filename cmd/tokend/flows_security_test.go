package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNothingLeaksFromTheFlows runs user-token exchanges (success, replay, a refused code), Stream
// tickets and robot sends (delivered, refused by the robot's window, rejected for a bad signature and
// an unknown token) on the security deployment, then checks that no app secret, client key, robot
// token or signing secret, login code, user token, refresh token or Stream ticket appears in the
// logs, /metrics or any error body, and that Redis holds none of them either (user tokens are held
// there sealed).
func TestNothingLeaksFromTheFlows(t *testing.T) {
	d := newSecDeployment(t)
	d.secrets["robot-token"] = "ROBOT-token-sec-1f2e3d4c5b6a"
	d.secrets["robot-secret"] = "SECrobot-signing-9a8b7c6d5e4f"
	d.secrets["bad-robot-secret"] = "SECrobot-wrong-signing-0f1e2d3c"
	d.secrets["unknown-robot-token"] = "ROBOT-token-unknown-7e6d5c4b"
	d.secrets["badsign-token"] = "ROBOT-token-badsign-8c7d6e5f"
	d.fake.AddRobot(d.secrets["robot-token"], d.secrets["robot-secret"])
	d.fake.AddRobot(d.secrets["badsign-token"], d.secrets["robot-secret"])
	d.writeSecret(t, "robot.token", d.secrets["robot-token"])
	f, err := os.OpenFile(d.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Appended to the last client (narrow), then the robots.
	fmt.Fprintf(f, `    user_tokens: [crm]
    streams: [crm]
    robots: ["*"]
robots:
  - name: pager
    access_token_file: %[1]s
    secret: %[2]s
  - name: badsign
    access_token: %[5]s
    secret: %[3]s
  - name: gone
    access_token: %[4]s
`, filepath.Join(d.dir, "robot.token"), d.secrets["robot-secret"], d.secrets["bad-robot-secret"], d.secrets["unknown-robot-token"],
		d.secrets["badsign-token"])
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, stop, reload := startedReloadable(t, []string{"-config", d.path}, d.getenv)
	api := "http://" + stderr.await(t, apiAddr)
	ops := "http://" + stderr.await(t, opsAddr)
	d.await(t, ops+"/readyz", "", http.StatusOK)

	code := d.fake.MintCode("dingcrm", "dingcorp")
	var values []string // user tokens, refresh tokens, Stream tickets: in 200 bodies only
	for range 2 {
		st, _, body := d.call(t, "POST", api+"/v1/apps/crm/user_token", narrowKey, `{"code":"`+code+`"}`)
		var ut struct{ AccessToken, RefreshToken string }
		if st != 200 || json.Unmarshal([]byte(strings.NewReplacer(`"access_token"`, `"AccessToken"`, `"refresh_token"`, `"RefreshToken"`).Replace(body)), &ut) != nil || ut.AccessToken == "" {
			t.Fatalf("user token: %d", st)
		}
		values = append(values, ut.AccessToken, ut.RefreshToken)
	}
	if st, _, body := d.call(t, "POST", api+"/v1/apps/crm/user_token", narrowKey, `{"code":"`+reportedJunk+`"}`); st != 400 || !strings.Contains(body, "invalid_grant") {
		t.Errorf("junk code: %d %s", st, body)
	}
	if st, _, _ := d.call(t, "POST", api+"/v1/apps/hr/user_token", narrowKey, `{"code":"`+code+`"}`); st != 403 {
		t.Errorf("another app's user token: %d", st)
	}
	st, _, body := d.call(t, "POST", api+"/v1/apps/crm/stream_ticket", narrowKey, `{"subscriptions":[{"type":"EVENT","topic":"*"}]}`)
	var tk struct {
		Ticket string `json:"ticket"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &tk) != nil || tk.Ticket == "" {
		t.Fatalf("stream ticket: %d", st)
	}
	values = append(values, tk.Ticket)

	msg := `{"msgtype":"text","text":{"content":"disk full"}}`
	for _, c := range []struct {
		robot  string
		status int
		code   string
	}{{"badsign", 502, `"upstream_code":"310000"`}, {"gone", 502, `"upstream_code":"300001"`}} {
		if st, _, body := d.call(t, "POST", api+"/v1/robots/"+c.robot+"/send", narrowKey, msg); st != c.status || !strings.Contains(body, c.code) {
			t.Errorf("%s: %d %s", c.robot, st, body)
		}
	}
	sent, limited := 0, 0
	for range 21 {
		switch st, h, _ := d.call(t, "POST", api+"/v1/robots/pager/send", narrowKey, msg); {
		case st == 200:
			sent++
		case st == 429 && h.Get("Retry-After") != "":
			limited++
		default:
			t.Errorf("pager: %d", st)
		}
	}
	if sent != 20 || limited != 1 || d.fake.FlowCalls().RobotBlocked != 0 {
		t.Errorf("pager: %d sent, %d refused, blocked %d times", sent, limited, d.fake.FlowCalls().RobotBlocked)
	}

	// Robots reload like apps: a robot added to the file is there after the reload, its token read
	// from its file.
	if st, _, _ := d.call(t, "POST", api+"/v1/robots/late/send", narrowKey, msg); st != 404 {
		t.Errorf("a robot not yet configured: %d, want 404", st)
	}
	d.secrets["late-token"] = "ROBOT-token-late-2b3c4d5e6f"
	d.fake.AddRobot(d.secrets["late-token"], "")
	d.writeSecret(t, "late.token", d.secrets["late-token"])
	f, err = os.OpenFile(d.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "  - name: late\n    access_token_file: %s\n", filepath.Join(d.dir, "late.token"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	reload()
	stderr.await(t, regexp.MustCompile(`configuration reloaded`))
	if st, _, body := d.call(t, "POST", api+"/v1/robots/late/send", narrowKey, msg); st != 200 {
		t.Errorf("the reloaded robot: %d %s", st, body)
	}

	_, _, metrics := d.call(t, "GET", ops+"/metrics", "", "")
	if !strings.Contains(metrics, "tokend_robot_messages_total") || !strings.Contains(metrics, "tokend_user_tokens_total") {
		t.Fatal("metrics lack the flows")
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := stdout.String() + stderr.String()
	for _, event := range []string{`"event":"user_token"`, `"event":"stream_ticket"`, `"event":"robot_send"`} {
		if !strings.Contains(logs, event) {
			t.Errorf("no %s audit line", event)
		}
	}
	secrets, tokens := d.forbidden()
	secrets = append(secrets, code)
	tokens = append(tokens, values...)
	checkNoLeak(t, "the logs", logs, secrets, tokens, false)
	checkNoLeak(t, "/metrics", metrics, secrets, tokens, false)
	for _, b := range d.bodies {
		checkNoLeak(t, "a response body", b, secrets, tokens, strings.HasPrefix(b, `{"access_token":`) || strings.HasPrefix(b, `{"endpoint":`) || carriesCredential(b))
	}
	// Redis holds app tokens by design, but no user token, refresh token or ticket of the flows.
	checkRedis(t, d.redis, append(secrets, values...), "")
}
