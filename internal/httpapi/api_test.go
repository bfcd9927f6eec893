package httpapi_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/token"
)

// stubBroker answers from fixed values and errors, and records invalidation reports.
type stubBroker struct {
	tokens   map[token.Key]token.Token
	errs     map[token.Key]error
	invalid  []string
	invErr   error
	ready    bool
	storeUp  bool
	statuses []broker.AppStatus
}

func (s *stubBroker) Token(_ context.Context, k token.Key) (token.Token, error) {
	if err := s.errs[k]; err != nil {
		return token.Token{}, err
	}
	t, ok := s.tokens[k]
	if !ok {
		if k.Kind == token.JSAPITicket {
			return token.Token{}, broker.ErrTicketDisabled
		}
		return token.Token{}, broker.ErrUnknownApp
	}
	return t, nil
}

func (s *stubBroker) Invalidate(_ context.Context, app, value string) (token.Token, error) {
	s.invalid = append(s.invalid, value)
	if s.invErr != nil {
		return token.Token{}, s.invErr
	}
	return s.tokens[token.Key{App: app, Kind: token.AccessToken}], nil
}
func (s *stubBroker) InvalidateKey(ctx context.Context, k token.Key, value string) (token.Token, error) {
	return s.Invalidate(ctx, k.App, value)
}
func (s *stubBroker) Status() []broker.AppStatus { return s.statuses }
func (s *stubBroker) Ready() bool                { return s.ready }
func (s *stubBroker) StoreUp() bool              { return s.storeUp }

var now = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

const (
	billingKey = "tkd_billing-key-for-tests"
	adminKey   = "tkd_admin-key-for-tests"
)

type fixture struct {
	b   *stubBroker
	srv *httptest.Server
	ops *httptest.Server
	reg *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	b := &stubBroker{
		tokens: map[token.Key]token.Token{
			{App: "crm", Kind: token.AccessToken}: {Value: "at-crm-1", ExpiresAt: now.Add(6543 * time.Second)},
			{App: "crm", Kind: token.JSAPITicket}: {Value: "ticket-crm-1", ExpiresAt: now.Add(time.Hour)},
			{App: "hr", Kind: token.AccessToken}:  {Value: "at-hr-1", ExpiresAt: now.Add(time.Hour)},
		},
		errs:    map[token.Key]error{},
		storeUp: true,
	}
	reg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Options{
		Broker: b,
		Apps: []httpapi.App{
			{Name: "crm", Type: "dingtalk", JSAPITicket: true, CorpID: "dingcorp", AgentID: "310804070"},
			{Name: "hr", Type: "dingtalk"},
		},
		Clients: []httpapi.Client{
			{Name: "billing", KeySHA256: config.HashKey(billingKey), Apps: []string{"crm"}},
			{Name: "admin", KeySHA256: config.HashKey(adminKey), Apps: []string{"*"}},
		},
		Now:        func() time.Time { return now },
		Registerer: reg,
		Gatherer:   reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{b: b, srv: httptest.NewServer(api.Handler()), ops: httptest.NewServer(api.OpsHandler()), reg: reg}
	t.Cleanup(f.srv.Close)
	t.Cleanup(f.ops.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path, key, body string) (*http.Response, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, r)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, raw)
		}
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("%s %s: Cache-Control = %q, want no-store", method, path, resp.Header.Get("Cache-Control"))
	}
	return resp, doc
}

func TestAccessTokenShape(t *testing.T) {
	f := newFixture(t)
	resp, doc := f.do(t, "GET", "/v1/apps/crm/access_token", billingKey, "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, doc)
	}
	want := map[string]any{"app": "crm", "access_token": "at-crm-1", "expires_at": "2026-11-22T09:49:03Z", "expires_in": float64(6543)}
	if fmt.Sprint(doc) != fmt.Sprint(want) {
		t.Fatalf("body = %v, want %v", doc, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func TestTicketShape(t *testing.T) {
	f := newFixture(t)
	resp, doc := f.do(t, "GET", "/v1/apps/crm/jsapi_ticket", billingKey, "")
	if resp.StatusCode != 200 || doc["ticket"] != "ticket-crm-1" || doc["expires_in"] != float64(3600) {
		t.Fatalf("status %d body %v", resp.StatusCode, doc)
	}
}

func TestErrors(t *testing.T) {
	rejected := &broker.RejectedError{Code: "invalidClientIdOrSecret"}
	unavailable := &broker.UnavailableError{RetryAfter: 2500 * time.Millisecond}
	tests := []struct {
		name       string
		method     string
		path, key  string
		body       string
		setup      func(*stubBroker)
		status     int
		code       string
		retryAfter string
		upstream   string
	}{
		{name: "no key", method: "GET", path: "/v1/apps/crm/access_token", status: 401, code: "unauthenticated"},
		{name: "wrong key", method: "GET", path: "/v1/apps/crm/access_token", key: "tkd_wrong", status: 401, code: "unauthenticated"},
		{name: "other app", method: "GET", path: "/v1/apps/hr/access_token", key: billingKey, status: 403, code: "forbidden"},
		{name: "missing app, limited client", method: "GET", path: "/v1/apps/nope/access_token", key: billingKey, status: 403, code: "forbidden"},
		{name: "missing app, all-apps client", method: "GET", path: "/v1/apps/nope/access_token", key: adminKey, status: 404, code: "app_not_found"},
		{name: "ticket not enabled", method: "GET", path: "/v1/apps/hr/jsapi_ticket", key: adminKey, status: 404, code: "app_not_found"},
		{name: "signature, ticket not enabled", method: "POST", path: "/v1/apps/hr/jsapi_signature", key: adminKey, body: `{"url":"https://a.example/"}`, status: 404, code: "app_not_found"},
		{name: "rejected", method: "GET", path: "/v1/apps/crm/access_token", key: billingKey,
			setup:  func(b *stubBroker) { b.errs[token.Key{App: "crm", Kind: token.AccessToken}] = rejected },
			status: 502, code: "upstream_rejected", upstream: "invalidClientIdOrSecret"},
		{name: "unavailable", method: "GET", path: "/v1/apps/crm/access_token", key: billingKey,
			setup:  func(b *stubBroker) { b.errs[token.Key{App: "crm", Kind: token.AccessToken}] = unavailable },
			status: 503, code: "upstream_unavailable", retryAfter: "3"},
		{name: "cool-down", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey, body: `{"access_token":"x"}`,
			setup:  func(b *stubBroker) { b.invErr = &broker.CooldownError{RetryAfter: 29 * time.Second} },
			status: 429, code: "rate_limited", retryAfter: "29"},
		{name: "malformed body", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey, body: `{"access_token":`, status: 400, code: "bad_request"},
		{name: "missing field", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey, body: `{}`, status: 400, code: "bad_request"},
		{name: "only an unknown field", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey, body: `{"accessToken":"x"}`, status: 400, code: "bad_request"},
		{name: "not an object", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey, body: `["x"]`, status: 400, code: "bad_request"},
		{name: "bad timestamp", method: "POST", path: "/v1/apps/crm/jsapi_signature", key: billingKey, body: `{"url":"https://a.example/","timestamp":"soon"}`, status: 400, code: "bad_request"},
		{name: "empty body", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey, status: 400, code: "bad_request"},
		{name: "body over 64 KiB", method: "POST", path: "/v1/apps/crm/access_token/invalidate", key: billingKey,
			body: `{"access_token":"` + strings.Repeat("a", 70<<10) + `"}`, status: 400, code: "bad_request"},
		{name: "bad url", method: "POST", path: "/v1/apps/crm/jsapi_signature", key: billingKey, body: `{"url":"/relative"}`, status: 400, code: "bad_request"},
		{name: "bad nonce", method: "POST", path: "/v1/apps/crm/jsapi_signature", key: billingKey, body: `{"url":"https://a.example/","nonce_str":"a&b"}`, status: 400, code: "bad_request"},
		{name: "wrong method", method: "DELETE", path: "/v1/apps/crm/access_token", key: billingKey, status: 405, code: "method_not_allowed"},
		{name: "unknown route", method: "GET", path: "/v1/nothing", key: billingKey, status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f.b)
			}
			resp, doc := f.do(t, tt.method, tt.path, tt.key, tt.body)
			if resp.StatusCode != tt.status || doc["code"] != tt.code || doc["status"] != float64(tt.status) {
				t.Fatalf("status %d body %v; want %d %s", resp.StatusCode, doc, tt.status, tt.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			if got, _ := doc["upstream_code"].(string); got != tt.upstream {
				t.Errorf("upstream_code = %q, want %q", got, tt.upstream)
			}
		})
	}
}

func TestListAppsShowsOnlyAllowedApps(t *testing.T) {
	f := newFixture(t)
	_, doc := f.do(t, "GET", "/v1/apps", billingKey, "")
	if got := fmt.Sprint(doc); got != "map[apps:[map[jsapi_ticket:true name:crm type:dingtalk]]]" {
		t.Fatalf("billing sees %s", got)
	}
	_, doc = f.do(t, "GET", "/v1/apps", adminKey, "")
	if n := len(doc["apps"].([]any)); n != 2 {
		t.Fatalf("admin sees %d apps, want 2", n)
	}
}

func TestInvalidatePassesTheReportedToken(t *testing.T) {
	f := newFixture(t)
	resp, doc := f.do(t, "POST", "/v1/apps/crm/access_token/invalidate", billingKey, `{"access_token":"at-crm-0"}`)
	if resp.StatusCode != 200 || doc["access_token"] != "at-crm-1" {
		t.Fatalf("status %d body %v", resp.StatusCode, doc)
	}
	if fmt.Sprint(f.b.invalid) != "[at-crm-0]" {
		t.Fatalf("broker got reports %v", f.b.invalid)
	}
}

func TestSignatureMatchesIndependentSHA1(t *testing.T) {
	f := newFixture(t)
	resp, doc := f.do(t, "POST", "/v1/apps/crm/jsapi_signature", billingKey,
		`{"url":"https://h5.example.com:8443/page?a=1&b=%E4%B8%AD#/route","nonce_str":"abcDEF123","timestamp":1763800000000}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d body %v", resp.StatusCode, doc)
	}
	plain := "jsapi_ticket=ticket-crm-1&noncestr=abcDEF123&timestamp=1763800000000&url=https://h5.example.com:8443/page?a=1&b=中"
	sum := sha1.Sum([]byte(plain))
	want := map[string]any{"agentId": "310804070", "corpId": "dingcorp", "timeStamp": float64(1763800000000),
		"nonceStr": "abcDEF123", "signature": hex.EncodeToString(sum[:])}
	if fmt.Sprint(doc) != fmt.Sprint(want) {
		t.Fatalf("body = %v\nwant   %v", doc, want)
	}
}

func TestSignatureAcceptsTimestampAsStringAndExtraMembers(t *testing.T) {
	f := newFixture(t)
	resp, doc := f.do(t, "POST", "/v1/apps/crm/jsapi_signature", billingKey,
		`{"url":"https://h5.example.com/","nonce_str":"n.1~x","timestamp":"1763800000000","jsApiList":["biz.util.open"]}`)
	if resp.StatusCode != 200 || doc["timeStamp"] != float64(1763800000000) || doc["nonceStr"] != "n.1~x" {
		t.Fatalf("status %d body %v", resp.StatusCode, doc)
	}
}

func TestSignatureDefaultsNonceAndTimestamp(t *testing.T) {
	f := newFixture(t)
	resp, doc := f.do(t, "POST", "/v1/apps/crm/jsapi_signature", billingKey, `{"url":"https://h5.example.com/"}`)
	if resp.StatusCode != 200 || doc["timeStamp"] != float64(now.UnixMilli()) || len(doc["nonceStr"].(string)) < 16 {
		t.Fatalf("status %d body %v", resp.StatusCode, doc)
	}
}

func TestMetricsLabelRoutePatternNotRawPath(t *testing.T) {
	f := newFixture(t)
	f.do(t, "GET", "/v1/apps/crm/access_token", billingKey, "")
	f.do(t, "GET", "/v1/apps/hr/access_token", billingKey, "")
	f.do(t, "GET", "/v1/apps/crm/access_token", "", "")
	if n := testutil.ToFloat64(counter(t, f.reg, "/v1/apps/{app}/access_token", "200")); n != 1 {
		t.Fatalf("200 count = %v", n)
	}
	if n := testutil.ToFloat64(counter(t, f.reg, "/v1/apps/{app}/access_token", "403")); n != 1 {
		t.Fatalf("403 count = %v", n)
	}
	if n := testutil.ToFloat64(counter(t, f.reg, "/v1/apps/{app}/access_token", "401")); n != 1 {
		t.Fatalf("401 count = %v", n)
	}
	out, _ := f.reg.Gather()
	for _, mf := range out {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "/crm/") || strings.Contains(l.GetValue(), "/hr/") {
					t.Fatalf("raw path in metric %s label %s=%s", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// counter returns a collector for one tokend_http_requests_total series.
func counter(t *testing.T, reg *prometheus.Registry, route, code string) prometheus.Collector {
	t.Helper()
	out, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range out {
		if mf.GetName() != "tokend_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatalf("no tokend_http_requests_total{route=%q,code=%q}", route, code)
	return nil
}

func TestReadyz(t *testing.T) {
	f := newFixture(t)
	f.b.statuses = []broker.AppStatus{{
		App:         broker.App{Name: "crm"},
		AccessToken: broker.Status{State: broker.StateOK, ExpiresAt: now.Add(time.Hour)},
		JSAPITicket: &broker.Status{State: broker.StateFailing, UpstreamCode: "60020"},
	}}
	get := func() (int, string) {
		resp, err := http.Get(f.ops.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, _ := get(); code != 503 {
		t.Fatalf("before warm-up: %d, want 503", code)
	}
	f.b.ready, f.b.storeUp = true, false
	code, body := get()
	want := `{"status":"ready","store":"degraded","apps":[{"name":"crm","access_token":{"state":"ok","expires_at":"2026-11-22T09:00:00Z"},"jsapi_ticket":{"state":"failing","upstream_code":"60020"}}]}`
	if code != 200 || body != want {
		t.Fatalf("readyz = %d %s\nwant 200 %s", code, body, want)
	}
	resp, err := http.Get(f.ops.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestCredentialDocumentFollowsTheToken: the token document, built once per token, follows every
// change of the served value or expiry, per app and per kind; expires_in follows the clock.
func TestCredentialDocumentFollowsTheToken(t *testing.T) {
	at, ticket := token.Key{App: "crm", Kind: token.AccessToken}, token.Key{App: "crm", Kind: token.JSAPITicket}
	b := &stubBroker{tokens: map[token.Key]token.Token{
		at:                                   {Value: "at-1", ExpiresAt: now.Add(time.Hour)},
		ticket:                               {Value: "ticket-1", ExpiresAt: now.Add(2 * time.Hour)},
		{App: "hr", Kind: token.AccessToken}: {Value: "at-hr", ExpiresAt: now.Add(time.Hour)},
	}}
	clock := now
	api, err := httpapi.New(httpapi.Options{
		Broker:  b,
		Apps:    []httpapi.App{{Name: "crm", Type: "dingtalk", JSAPITicket: true}, {Name: "hr", Type: "dingtalk"}},
		Clients: []httpapi.Client{{Name: "admin", KeySHA256: config.HashKey(adminKey), Apps: []string{"*"}}},
		Now:     func() time.Time { return clock },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := api.Handler()
	get := func(path string) string {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer "+adminKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
		}
		return w.Body.String()
	}
	steps := []struct {
		change func()
		path   string
		want   string
	}{
		{func() {}, "/v1/apps/crm/access_token",
			`{"app":"crm","access_token":"at-1","expires_at":"2026-11-22T09:00:00Z","expires_in":3600}`},
		{func() {}, "/v1/apps/crm/jsapi_ticket",
			`{"app":"crm","ticket":"ticket-1","expires_at":"2026-11-22T10:00:00Z","expires_in":7200}`},
		{func() {}, "/v1/apps/hr/access_token",
			`{"app":"hr","access_token":"at-hr","expires_at":"2026-11-22T09:00:00Z","expires_in":3600}`},
		{func() { clock = clock.Add(10 * time.Second) }, "/v1/apps/crm/access_token",
			`{"app":"crm","access_token":"at-1","expires_at":"2026-11-22T09:00:00Z","expires_in":3590}`},
		{func() { b.tokens[at] = token.Token{Value: "at-2", ExpiresAt: now.Add(time.Hour)} }, "/v1/apps/crm/access_token",
			`{"app":"crm","access_token":"at-2","expires_at":"2026-11-22T09:00:00Z","expires_in":3590}`},
		{func() { b.tokens[at] = token.Token{Value: "at-2", ExpiresAt: now.Add(3 * time.Hour)} }, "/v1/apps/crm/access_token",
			`{"app":"crm","access_token":"at-2","expires_at":"2026-11-22T11:00:00Z","expires_in":10790}`},
		{func() {}, "/v1/apps/crm/jsapi_ticket",
			`{"app":"crm","ticket":"ticket-1","expires_at":"2026-11-22T10:00:00Z","expires_in":7190}`},
	}
	for i, s := range steps {
		s.change()
		if got := get(s.path); got != s.want+"\n" {
			t.Errorf("step %d, GET %s:\n got %s want %s", i, s.path, got, s.want)
		}
	}
}
