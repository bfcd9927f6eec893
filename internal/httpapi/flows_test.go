package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/flowerr"
	"github.com/tokend/tokend/internal/grant"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/streamticket"
	"github.com/tokend/tokend/internal/token"
)

type stubGrants struct{ err error }

func (s *stubGrants) Exchange(_ context.Context, app string, g dingtalk.UserGrant) (grant.Result, bool, error) {
	if s.err != nil {
		return grant.Result{}, false, s.err
	}
	if app == "nope" {
		return grant.Result{}, false, flowerr.ErrUnknown
	}
	return grant.Result{AccessToken: "uat-" + g.Code + g.RefreshToken, RefreshToken: "urt-1", ExpiresAt: now.Add(7200 * time.Second), CorpID: "dingcorp"}, false, nil
}

type stubStreams struct{ err error }

func (s *stubStreams) Open(_ context.Context, _ string, r dingtalk.StreamRequest) (dingtalk.StreamTicket, error) {
	if err := streamticket.Validate(r); err != nil {
		return dingtalk.StreamTicket{}, err
	}
	if s.err != nil {
		return dingtalk.StreamTicket{}, s.err
	}
	return dingtalk.StreamTicket{Endpoint: "wss://stream.example/connect", Ticket: "st-1"}, nil
}

type stubRobots struct {
	mu   sync.Mutex
	got  [][]byte
	err  error
	resp string
}

func (s *stubRobots) Send(_ context.Context, name string, body []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "ghost" {
		return nil, flowerr.ErrUnknown
	}
	s.got = append(s.got, body)
	if s.err != nil {
		return nil, s.err
	}
	return []byte(s.resp), nil
}

type flowFixture struct {
	*fixture
	grants  *stubGrants
	streams *stubStreams
	robots  *stubRobots
	mu      sync.Mutex
	events  []httpapi.Event
}

func newFlowFixture(t *testing.T) *flowFixture {
	t.Helper()
	f := &flowFixture{grants: &stubGrants{}, streams: &stubStreams{}, robots: &stubRobots{resp: `{"errcode":0,"errmsg":"ok"}`}}
	b := &stubBroker{tokens: map[token.Key]token.Token{}, storeUp: true}
	api, err := httpapi.New(httpapi.Options{
		Broker:  b,
		Apps:    []httpapi.App{{Name: "crm", Type: "dingtalk"}, {Name: "hr", Type: "dingtalk"}},
		Clients: []httpapi.Client{{Name: "billing", KeySHA256: config.HashKey(billingKey), Apps: []string{"crm"}}, {Name: "admin", KeySHA256: config.HashKey(adminKey), Apps: []string{"*"}}},
		Now:     func() time.Time { return now },
		Audit: func(e httpapi.Event) {
			f.mu.Lock()
			f.events = append(f.events, e)
			f.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	api.SetFlows(httpapi.Flows{Grants: f.grants, Streams: f.streams, Robots: f.robots}, map[string]httpapi.Permissions{
		"billing": {UserTokens: []string{"crm"}, Streams: []string{"crm"}, Robots: []string{"alerts"}},
		"admin":   {UserTokens: []string{"*"}, Robots: []string{"*"}},
	})
	f.fixture = &fixture{b: b, srv: httptest.NewServer(api.Handler())}
	t.Cleanup(f.srv.Close)
	return f
}

func TestUserTokenRoute(t *testing.T) {
	f := newFlowFixture(t)
	resp, doc := f.do(t, "POST", "/v1/apps/crm/user_token", billingKey, `{"code":"c1"}`)
	want := map[string]any{"access_token": "uat-c1", "refresh_token": "urt-1", "expires_at": "2026-11-22T10:00:00Z", "expires_in": float64(7200), "corp_id": "dingcorp"}
	if resp.StatusCode != 200 || fmt.Sprint(doc) != fmt.Sprint(want) {
		t.Fatalf("%d %v", resp.StatusCode, doc)
	}
	for _, tc := range []struct {
		key, path, body string
		status          int
		code            string
	}{
		{billingKey, "/v1/apps/hr/user_token", `{"code":"c1"}`, 403, "forbidden"},
		{billingKey, "/v1/apps/crm/user_token", `{"code":"c1","refresh_token":"r"}`, 400, "bad_request"},
		{billingKey, "/v1/apps/crm/user_token", `{}`, 400, "bad_request"},
		{billingKey, "/v1/apps/crm/user_token", `[`, 400, "bad_request"},
		{adminKey, "/v1/apps/nope/user_token", `{"code":"c1"}`, 404, "app_not_found"},
		{adminKey, "/v1/apps/crm/stream_ticket", `{"subscriptions":[{"type":"EVENT","topic":"*"}]}`, 403, "forbidden"},
		{"", "/v1/apps/crm/user_token", `{"code":"c1"}`, 401, "unauthenticated"},
	} {
		resp, doc := f.do(t, "POST", tc.path, tc.key, tc.body)
		if resp.StatusCode != tc.status || doc["code"] != tc.code {
			t.Errorf("%s %s: %d %v, want %d %s", tc.path, tc.body, resp.StatusCode, doc, tc.status, tc.code)
		}
	}
	f.grants.err = &flowerr.InvalidGrantError{UpstreamCode: "invalidAuthCode"}
	if resp, doc := f.do(t, "POST", "/v1/apps/crm/user_token", billingKey, `{"code":"c1"}`); resp.StatusCode != 400 || doc["code"] != "invalid_grant" || doc["upstream_code"] != "invalidAuthCode" {
		t.Fatalf("invalid grant: %d %v", resp.StatusCode, doc)
	}
	f.grants.err = &flowerr.RejectedError{Upstream: &dingtalk.Error{Code: "invalidClientIdOrSecret"}}
	if resp, doc := f.do(t, "POST", "/v1/apps/crm/user_token", billingKey, `{"code":"c1"}`); resp.StatusCode != 502 || doc["code"] != "upstream_rejected" || doc["upstream_code"] != "invalidClientIdOrSecret" {
		t.Fatalf("rejected: %d %v", resp.StatusCode, doc)
	}
	f.grants.err = &flowerr.UnavailableError{RetryAfter: 2 * time.Second, Reason: "dingtalk is failing"}
	if resp, doc := f.do(t, "POST", "/v1/apps/crm/user_token", billingKey, `{"refresh_token":"r1"}`); resp.StatusCode != 503 || doc["code"] != "upstream_unavailable" || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("unavailable: %d %v", resp.StatusCode, doc)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var results []string
	for _, e := range f.events {
		if e.Type == "user_token" {
			results = append(results, e.Result)
		}
		if strings.Contains(fmt.Sprintf("%+v", e), "c1") || strings.Contains(fmt.Sprintf("%+v", e), "uat-") {
			t.Fatalf("audit event holds a value: %+v", e)
		}
	}
	if fmt.Sprint(results) != "[ok app_not_found invalid_grant upstream_rejected upstream_unavailable]" {
		t.Fatalf("audit results %v", results)
	}
}

func TestStreamTicketRoute(t *testing.T) {
	f := newFlowFixture(t)
	resp, doc := f.do(t, "POST", "/v1/apps/crm/stream_ticket", billingKey, `{"subscriptions":[{"type":"EVENT","topic":"*"},{"type":"CALLBACK","topic":"/v1.0/im/bot/messages/get"}],"ua":"svc/1"}`)
	if resp.StatusCode != 200 || doc["endpoint"] != "wss://stream.example/connect" || doc["ticket"] != "st-1" || len(doc) != 2 {
		t.Fatalf("%d %v", resp.StatusCode, doc)
	}
	many := strings.Repeat(`{"type":"EVENT","topic":"*"},`, 33)
	for _, body := range []string{`{"subscriptions":[]}`, `{}`, `{"subscriptions":[{"type":"event","topic":"*"}]}`,
		`{"subscriptions":[{"type":"EVENT","topic":""}]}`, `{"subscriptions":[` + strings.TrimSuffix(many, ",") + `]}`} {
		if resp, doc := f.do(t, "POST", "/v1/apps/crm/stream_ticket", billingKey, body); resp.StatusCode != 400 || doc["code"] != "bad_request" {
			t.Errorf("%.60s: %d %v", body, resp.StatusCode, doc)
		}
	}
}

func TestRobotSendRoute(t *testing.T) {
	f := newFlowFixture(t)
	body := "{\"msgtype\":\"text\",\n \"text\":{\"content\":\"磁盘满了 <&>\"}}  "
	resp, doc := f.do(t, "POST", "/v1/robots/alerts/send", billingKey, body)
	if resp.StatusCode != 200 || doc["errcode"] != float64(0) || !bytes.Equal(f.robots.got[0], []byte(body)) {
		t.Fatalf("%d %v, forwarded %q", resp.StatusCode, doc, f.robots.got)
	}
	big := `{"msgtype":"text","text":{"content":"` + strings.Repeat("x", 64<<10) + `"}}`
	for _, tc := range []struct {
		key, robot, body string
		status           int
		code             string
	}{
		{billingKey, "pager", body, 403, "forbidden"},
		{adminKey, "ghost", body, 404, "not_found"},
		{billingKey, "alerts", big, 400, "bad_request"},
		{billingKey, "alerts", "hello", 400, "bad_request"},
		{billingKey, "alerts", `["msgtype"]`, 400, "bad_request"},
	} {
		resp, doc := f.do(t, "POST", "/v1/robots/"+tc.robot+"/send", tc.key, tc.body)
		if resp.StatusCode != tc.status || doc["code"] != tc.code {
			t.Errorf("%s %.30s: %d %v, want %d %s", tc.robot, tc.body, resp.StatusCode, doc, tc.status, tc.code)
		}
	}
	f.robots.err = &flowerr.RateLimitedError{RetryAfter: 1500 * time.Millisecond, Reason: "robot alerts sent 20 messages"}
	if resp, doc := f.do(t, "POST", "/v1/robots/alerts/send", billingKey, body); resp.StatusCode != 429 || doc["code"] != "rate_limited" || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("rate limited: %d %v", resp.StatusCode, doc)
	}
	f.robots.err = &flowerr.UnavailableError{RetryAfter: 10 * time.Minute, Upstream: &dingtalk.Error{Code: "410100"}, Reason: "blocked"}
	if resp, doc := f.do(t, "POST", "/v1/robots/alerts/send", billingKey, body); resp.StatusCode != 503 || doc["upstream_code"] != "410100" || resp.Header.Get("Retry-After") != "600" {
		t.Fatalf("blocked: %d %v", resp.StatusCode, doc)
	}
	f.robots.err = &flowerr.RejectedError{Upstream: &dingtalk.Error{Code: "310000"}}
	if resp, doc := f.do(t, "POST", "/v1/robots/alerts/send", billingKey, body); resp.StatusCode != 502 || doc["upstream_code"] != "310000" {
		t.Fatalf("rejected: %d %v", resp.StatusCode, doc)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sends := 0
	for _, e := range f.events {
		if e.Type == "robot_send" {
			sends++
			if e.Robot == "" || e.App != "" {
				t.Fatalf("robot_send event %+v", e)
			}
		}
	}
	if sends != 5 {
		t.Fatalf("%d robot_send events, want 5", sends)
	}
}

func TestFlowsDenyByDefault(t *testing.T) {
	f := newFlowFixture(t)
	// A client with no entry in the permissions may use no flow, though it may use every app.
	f.robots.err = nil
	b := &stubBroker{tokens: map[token.Key]token.Token{}, storeUp: true}
	api, err := httpapi.New(httpapi.Options{Broker: b, Apps: []httpapi.App{{Name: "crm", Type: "dingtalk"}},
		Clients: []httpapi.Client{{Name: "admin", KeySHA256: config.HashKey(adminKey), Apps: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	api.SetFlows(httpapi.Flows{Grants: f.grants, Streams: f.streams, Robots: f.robots}, nil)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	for _, path := range []string{"/v1/apps/crm/user_token", "/v1/apps/crm/stream_ticket", "/v1/robots/alerts/send"} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+path, strings.NewReader(`{"code":"x"}`))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("%s: %d, want 403", path, resp.StatusCode)
		}
	}
}
