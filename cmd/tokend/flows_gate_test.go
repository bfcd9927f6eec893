package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/fakedingtalk"
)

var _ gate = (*broker.Broker)(nil)

// TestFlowsObeyTheIPBan bans the egress IP at start-up (DingTalk's block page on token calls): user
// tokens, Stream tickets and robot sends then get 503 with Retry-After and make no DingTalk call, as
// every Part 2 call obeys the broker's shared pause.
func TestFlowsObeyTheIPBan(t *testing.T) {
	d := newSecDeployment(t)
	d.secrets["robot-token"] = "ROBOT-token-ban-3c4d5e6f7a8b"
	d.fake.AddRobot(d.secrets["robot-token"], "")
	f, err := os.OpenFile(d.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "    user_tokens: [crm]\n    streams: [crm]\n    robots: [\"*\"]\nrobots:\n  - name: pager\n    access_token: %s\n", d.secrets["robot-token"])
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d.fake.SetFault("", fakedingtalk.Fault{Mode: fakedingtalk.FaultBanHTML})
	_, stderr, stop := started(t, []string{"-config", d.path}, d.getenv)
	api := "http://" + stderr.await(t, apiAddr)
	ops := "http://" + stderr.await(t, opsAddr)
	d.await(t, ops+"/readyz", "", http.StatusOK)
	before := d.fake.FlowCalls()
	for _, c := range []struct{ path, body string }{
		{"/v1/apps/crm/user_token", `{"code":"` + d.fake.MintCode("dingcrm", "dingcorp") + `"}`},
		{"/v1/apps/crm/stream_ticket", `{"subscriptions":[{"type":"EVENT","topic":"*"}]}`},
		{"/v1/robots/pager/send", `{"msgtype":"text","text":{"content":"x"}}`},
	} {
		st, h, body := d.call(t, "POST", api+c.path, narrowKey, c.body)
		if st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, `"upstream_code":"ip_ban"`) {
			t.Errorf("%s during a ban: %d %s (Retry-After %q)", c.path, st, body, h.Get("Retry-After"))
		}
	}
	if after := d.fake.FlowCalls(); after != before {
		t.Errorf("the flows called DingTalk during the ban: %+v then %+v", before, after)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}
