package httpapi_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/token"
)

// stubISV is the third-party part of a stub broker.
type stubISV struct {
	*stubBroker
	reported []token.Key
	tickets  []string
	ticketAt []time.Time
}

func (s *stubISV) InvalidateKey(_ context.Context, k token.Key, value string) (token.Token, error) {
	s.reported = append(s.reported, k)
	return s.tokens[k], nil
}

func (s *stubISV) Corps(app string) ([]broker.CorpStatus, error) {
	if app != "saas" {
		return nil, broker.ErrUnknownApp
	}
	return []broker.CorpStatus{{Corp: "dingcorpa", Status: broker.Status{State: broker.StateOK, ExpiresAt: now.Add(time.Hour)}}}, nil
}

func (s *stubISV) SuiteTicket(_ context.Context, app, ticket string, at time.Time) error {
	s.tickets = append(s.tickets, ticket)
	s.ticketAt = append(s.ticketAt, at)
	return nil
}

const relayKey = "tkd_relay-key-for-tests"

func newISVFixture(t *testing.T) (*stubISV, *httptest.Server, *httptest.Server) {
	t.Helper()
	corpA := token.Key{App: "saas", Kind: token.AccessToken, Corp: "dingcorpa"}
	b := &stubISV{stubBroker: &stubBroker{
		tokens: map[token.Key]token.Token{
			{App: "saas", Kind: token.AccessToken}: {Value: "suite-1", ExpiresAt: now.Add(time.Hour)},
			corpA:                                  {Value: "corp-a-1", ExpiresAt: now.Add(100 * time.Second)},
			{App: "saas", Kind: token.JSAPITicket, Corp: "dingcorpa"}: {Value: "ticket-a-1", ExpiresAt: now.Add(time.Hour)},
			{App: "crm", Kind: token.AccessToken}:                     {Value: "at-crm-1", ExpiresAt: now.Add(time.Hour)},
		},
		errs:    map[token.Key]error{{App: "saas", Kind: token.AccessToken, Corp: "dinggone"}: &broker.CorpNotFoundError{Code: "InvalidAuthCorpId"}},
		storeUp: true, ready: true,
		statuses: []broker.AppStatus{{App: broker.App{Name: "saas"}, AccessToken: broker.Status{State: broker.StateFailing, UpstreamCode: "suite_ticket_missing"},
			Corps: map[broker.State]int{broker.StateOK: 2, broker.StateRefreshing: 0, broker.StateFailing: 1}}},
	}}
	api, err := httpapi.New(httpapi.Options{
		Broker: b, ISV: b,
		Apps: []httpapi.App{
			{Name: "saas", Type: "dingtalk_isv", JSAPITicket: true, ISV: true},
			{Name: "crm", Type: "dingtalk"},
		},
		Clients: []httpapi.Client{
			{Name: "billing", KeySHA256: config.HashKey(billingKey), Apps: []string{"crm"}},
			{Name: "admin", KeySHA256: config.HashKey(adminKey), Apps: []string{"*"}},
			{Name: "relay", KeySHA256: config.HashKey(relayKey), SuiteTickets: []string{"saas"}},
		},
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	ops := httptest.NewServer(api.OpsHandler())
	t.Cleanup(ops.Close)
	return b, srv, ops
}

func isvDo(t *testing.T, srv *httptest.Server, key, method, path, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func TestISVRoutes(t *testing.T) {
	b, srv, ops := newISVFixture(t)
	tests := []struct {
		name, key, method, path, body string
		status                        int
		want                          map[string]any
	}{
		{"suite token", adminKey, "GET", "/v1/apps/saas/access_token", "", 200, map[string]any{"access_token": "suite-1"}},
		{"corp token", adminKey, "GET", "/v1/apps/saas/corps/dingcorpa/access_token", "", 200,
			map[string]any{"app": "saas", "corp_id": "dingcorpa", "access_token": "corp-a-1", "expires_in": float64(100)}},
		{"corp ticket", adminKey, "GET", "/v1/apps/saas/corps/dingcorpa/jsapi_ticket", "", 200, map[string]any{"corp_id": "dingcorpa", "ticket": "ticket-a-1"}},
		{"corp refused", adminKey, "GET", "/v1/apps/saas/corps/dinggone/access_token", "", 404, map[string]any{"code": "corp_not_found"}},
		{"not a corp id", adminKey, "GET", "/v1/apps/saas/corps/a%2Fb/access_token", "", 404, map[string]any{"code": "corp_not_found"}},
		{"corps of an internal app", adminKey, "GET", "/v1/apps/crm/corps", "", 404, map[string]any{"code": "app_not_found"}},
		{"corp of an internal app", adminKey, "GET", "/v1/apps/crm/corps/dingcorpa/access_token", "", 404, map[string]any{"code": "app_not_found"}},
		{"corp of a forbidden app", billingKey, "GET", "/v1/apps/saas/corps/dingcorpa/access_token", "", 403, map[string]any{"code": "forbidden"}},
		{"suite signature", adminKey, "POST", "/v1/apps/saas/jsapi_signature", `{"url":"https://a.example/"}`, 404, map[string]any{"code": "app_not_found"}},
		{"corp signature without agent", adminKey, "POST", "/v1/apps/saas/corps/dingcorpa/jsapi_signature", `{"url":"https://a.example/"}`, 400, map[string]any{"code": "bad_request"}},
		{"corp signature", adminKey, "POST", "/v1/apps/saas/corps/dingcorpa/jsapi_signature",
			`{"url":"https://a.example/p","agent_id":"123","nonce_str":"n","timestamp":1}`, 200,
			map[string]any{"agentId": "123", "corpId": "dingcorpa", "nonceStr": "n", "timeStamp": float64(1),
				"signature": sha1hex("jsapi_ticket=ticket-a-1&noncestr=n&timestamp=1&url=https://a.example/p")}},
		{"ticket by a client not allowed", adminKey, "PUT", "/v1/apps/saas/suite_ticket", `{"suite_ticket":"x"}`, 403, map[string]any{"code": "forbidden"}},
		{"ticket for another app", relayKey, "PUT", "/v1/apps/crm/suite_ticket", `{"suite_ticket":"x"}`, 403, map[string]any{"code": "forbidden"}},
		{"empty ticket", relayKey, "PUT", "/v1/apps/saas/suite_ticket", `{}`, 400, map[string]any{"code": "bad_request"}},
		{"relay has no tokens", relayKey, "GET", "/v1/apps/saas/access_token", "", 403, map[string]any{"code": "forbidden"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := isvDo(t, srv, tt.key, tt.method, tt.path, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %v", status, tt.status, body)
			}
			for k, v := range tt.want {
				if body[k] != v {
					t.Fatalf("%s = %v, want %v (body %v)", k, body[k], v, body)
				}
			}
		})
	}

	if status, _ := isvDo(t, srv, relayKey, "PUT", "/v1/apps/saas/suite_ticket", `{"suite_ticket":"tk-1"}`); status != http.StatusNoContent {
		t.Fatalf("PUT suite_ticket: %d", status)
	}
	if len(b.tickets) != 1 || b.tickets[0] != "tk-1" || !b.ticketAt[0].Equal(now) {
		t.Fatalf("ticket handed on: %v at %v", b.tickets, b.ticketAt)
	}
	if status, body := isvDo(t, srv, adminKey, "POST", "/v1/apps/saas/corps/dingcorpa/access_token/invalidate", `{"access_token":"corp-a-1"}`); status != 200 || body["corp_id"] != "dingcorpa" {
		t.Fatalf("invalidate: %d %v", status, body)
	}
	if len(b.reported) != 1 || b.reported[0] != (token.Key{App: "saas", Kind: token.AccessToken, Corp: "dingcorpa"}) {
		t.Fatalf("reported %v", b.reported)
	}
	status, body := isvDo(t, srv, adminKey, "GET", "/v1/apps/saas/corps", "")
	corps, _ := body["corps"].([]any)
	if status != 200 || len(corps) != 1 || corps[0].(map[string]any)["corp_id"] != "dingcorpa" || corps[0].(map[string]any)["state"] != "ok" {
		t.Fatalf("corps: %d %v", status, body)
	}
	resp, err := ops.Client().Get(ops.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `"corps":{"ok":2,"refreshing":0,"failing":1}`) ||
		!strings.Contains(string(raw), `"upstream_code":"suite_ticket_missing"`) {
		t.Fatalf("readyz %s", raw)
	}
}

func TestISVSuiteTicketMissingProblem(t *testing.T) {
	b, srv, _ := newISVFixture(t)
	b.errs[token.Key{App: "saas", Kind: token.AccessToken}] = &broker.SuiteTicketError{RetryAfter: 30 * time.Second, Code: "suite_ticket_missing"}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/apps/saas/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 503 || body["code"] != "suite_ticket_missing" || resp.Header.Get("Retry-After") != "30" {
		t.Fatalf("%d %v Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
}

func sha1hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestISVCorpProxyRoute(t *testing.T) {
	rule, err := proxyrule.Parse("GET api:/v1.0/contact/users/*")
	if err != nil {
		t.Fatal(err)
	}
	fwd := &recordingForwarder{}
	b := &stubISV{stubBroker: &stubBroker{storeUp: true, ready: true}}
	rules := map[string]proxyrule.Set{"saas": {rule}, "crm": {rule}}
	api, err := httpapi.New(httpapi.Options{
		Broker: b, ISV: b, Proxy: fwd,
		Apps:    []httpapi.App{{Name: "saas", Type: "dingtalk_isv", ISV: true}, {Name: "crm", Type: "dingtalk"}},
		Clients: []httpapi.Client{{Name: "admin", KeySHA256: config.HashKey(adminKey), Apps: []string{"*"}, Proxy: rules}},
		Now:     func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	tests := []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/apps/saas/corps/dingcorpa/proxy/api/v1.0/contact/users/u1", 200, ""},
		{"/v1/apps/saas/corps/a.b~c/proxy/api/v1.0/contact/users/u1", 404, "corp_not_found"},
		{"/v1/apps/crm/corps/dingcorpa/proxy/api/v1.0/contact/users/u1", 404, "app_not_found"},
		{"/v1/apps/saas/corps/dingcorpa/proxy/api/v1.0/other", 403, "forbidden"},
		{"/v1/apps/saas/corps/dingcorpa/proxy/api/v1.0/contact/users/../x", 400, "bad_request"},
		{"/v1/apps/saas/corps/dingcorpa/nope/api/v1.0/contact/users/u1", 404, "not_found"},
	}
	for _, tt := range tests {
		status, body := isvDo(t, srv, adminKey, "GET", tt.path, "")
		if status != tt.status || (tt.code != "" && body["code"] != tt.code) {
			t.Errorf("%s: %d %v, want %d %s", tt.path, status, body, tt.status, tt.code)
		}
	}
	if len(fwd.targets) != 1 || fwd.targets[0].App != "saas" || fwd.targets[0].Corp != "dingcorpa" || fwd.targets[0].Family != proxyrule.API {
		t.Fatalf("forwarded %+v", fwd.targets)
	}
}
