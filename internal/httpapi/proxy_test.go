package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/token"
)

const (
	proxyKey   = "tkd_proxy-only-key-for-tests"
	proxyAdmin = "tkd_proxy-admin-key-for-tests"
)

type proxyFixture struct {
	api, gw *httptest.Server
	up      *httptest.Server
	mu      sync.Mutex
	calls   int
	events  []httpapi.ProxyEvent
}

func (f *proxyFixture) upstreamCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *proxyFixture) lastEvent(t *testing.T) httpapi.ProxyEvent {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events) == 0 {
		t.Fatal("no proxy audit event")
	}
	return f.events[len(f.events)-1]
}

func rules(t *testing.T, texts ...string) proxyrule.Set {
	t.Helper()
	var s proxyrule.Set
	for _, text := range texts {
		r, err := proxyrule.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		s = append(s, r)
	}
	return s
}

func newProxyFixture(t *testing.T) *proxyFixture {
	t.Helper()
	f := &proxyFixture{}
	f.up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls++
		f.mu.Unlock()
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"errcode":0,"method":%q,"path":%q,"query":%q,"header_token":%q,"bytes":%d}`,
			r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("X-Acs-Dingtalk-Access-Token"), n)
	}))
	t.Cleanup(f.up.Close)
	b := &stubBroker{tokens: map[token.Key]token.Token{
		{App: "crm", Kind: token.AccessToken}: {Value: "at-crm-1", ExpiresAt: time.Now().Add(time.Hour)},
	}, storeUp: true}
	reg := prometheus.NewRegistry()
	p, err := proxy.New(proxy.Options{Tokens: b, APIBase: f.up.URL, OAPIBase: f.up.URL, MaxBody: 2 << 20, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Options{
		Broker: b,
		Apps:   []httpapi.App{{Name: "crm", Type: "dingtalk"}, {Name: "hr", Type: "dingtalk"}},
		Clients: []httpapi.Client{
			{Name: "svc", KeySHA256: config.HashKey(proxyKey), Proxy: map[string]proxyrule.Set{
				"crm": rules(t, "POST oapi:/topapi/v2/user/get", "GET api:/v1.0/contact/users/*", "* oapi:/media/**", "* api:/v1.0/contact/users/trace"),
			}},
			{Name: "admin", KeySHA256: config.HashKey(proxyAdmin), Apps: []string{"*"}},
		},
		Registerer: reg,
		Proxy:      p,
		ProxyAudit: func(e httpapi.ProxyEvent) {
			f.mu.Lock()
			f.events = append(f.events, e)
			f.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.api = httptest.NewServer(api.Handler())
	f.gw = httptest.NewServer(api.GatewayHandler())
	t.Cleanup(f.api.Close)
	t.Cleanup(f.gw.Close)
	return f
}

type reply struct {
	status int
	header http.Header
	doc    map[string]any
}

func send(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("body is not JSON: %q", raw)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	return reply{resp.StatusCode, resp.Header, doc}
}

func proxyReq(t *testing.T, method, url, key string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return req
}

func TestProxyRoutes(t *testing.T) {
	f := newProxyFixture(t)
	base := f.api.URL + "/v1/apps/crm/proxy"
	cases := []struct {
		name   string
		method string
		url    string
		key    string
		status int
		code   string // problem code, "" for DingTalk's answer
	}{
		{"allowed oapi", "POST", base + "/oapi/topapi/v2/user/get?lang=zh", proxyKey, 200, ""},
		{"allowed api", "GET", base + "/api/v1.0/contact/users/manager", proxyKey, 200, ""},
		{"wrong method", "GET", base + "/oapi/topapi/v2/user/get", proxyKey, 403, "forbidden"},
		{"wrong family", "POST", base + "/api/topapi/v2/user/get", proxyKey, 403, "forbidden"},
		{"not listed", "GET", base + "/api/v1.0/contact/users/a/b", proxyKey, 403, "forbidden"},
		{"app without rules", "GET", f.api.URL + "/v1/apps/hr/proxy/api/v1.0/contact/users/x", proxyKey, 403, "forbidden"},
		{"unknown app", "GET", f.api.URL + "/v1/apps/nope/proxy/api/v1.0/contact/users/x", proxyKey, 403, "forbidden"},
		{"raw-token client has no proxy rules", "GET", base + "/api/v1.0/contact/users/x", proxyAdmin, 403, "forbidden"},
		{"dot-dot encoded", "GET", base + "/api/v1.0/contact/users/%2e%2e", proxyKey, 400, "bad_request"},
		{"dot-dot climbing to an allowed path", "POST", base + "/oapi/media/%2E%2E/topapi/x", proxyKey, 400, "bad_request"},
		{"encoded slash", "GET", base + "/api/v1.0/contact/users/a%2Fb", proxyKey, 400, "bad_request"},
		{"empty segment", "GET", base + "/api/v1.0//contact/users/x", proxyKey, 400, "bad_request"},
		{"empty path", "GET", base + "/api/", proxyKey, 400, "bad_request"},
		{"unknown family", "GET", base + "/web/x", proxyKey, 404, "not_found"},
		{"TRACE would echo the token", "TRACE", base + "/api/v1.0/contact/users/trace", proxyKey, 405, "method_not_allowed"},
		{"no key", "GET", base + "/api/v1.0/contact/users/x", "", 401, "unauthenticated"},
		{"proxy-only client gets no token", "GET", f.api.URL + "/v1/apps/crm/access_token", proxyKey, 403, "forbidden"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.upstreamCalls()
			r := send(t, proxyReq(t, c.method, c.url, c.key, nil))
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %v", r.status, c.status, r.doc)
			}
			isProblem := r.header.Get("Content-Type") == "application/problem+json"
			if c.code != "" {
				if !isProblem || r.doc["code"] != c.code {
					t.Errorf("got %v (%s), want problem %s", r.doc, r.header.Get("Content-Type"), c.code)
				}
				if f.upstreamCalls() != before {
					t.Errorf("DingTalk was called")
				}
				return
			}
			if isProblem || f.upstreamCalls() != before+1 {
				t.Errorf("not DingTalk's answer: %v", r.doc)
			}
		})
	}

	r := send(t, proxyReq(t, "POST", base+"/oapi/topapi/v2/user/get?lang=zh&access_token=x", proxyKey, nil))
	if r.doc["query"] != "lang=zh&access_token=at-crm-1" || r.doc["path"] != "/topapi/v2/user/get" {
		t.Errorf("DingTalk got %v", r.doc)
	}
	ev := f.lastEvent(t)
	if ev != (httpapi.ProxyEvent{Client: "svc", App: "crm", Method: "POST", Family: "oapi", Path: "/topapi/v2/user/get",
		Status: 200, Result: "ok", Remote: ev.Remote}) || ev.Remote == "" {
		t.Errorf("audit event %+v", ev)
	}
	send(t, proxyReq(t, "GET", base+"/oapi/topapi/v2/user/get", proxyKey, nil))
	if ev := f.lastEvent(t); ev.Status != 403 || ev.Result != "forbidden" || ev.Path != "/topapi/v2/user/get" {
		t.Errorf("audit event of a denied call %+v", ev)
	}
}

func TestProxyBodyLimits(t *testing.T) {
	f := newProxyFixture(t)
	url := f.api.URL + "/v1/apps/crm/proxy/oapi/media/upload"
	// Far above the client API's 64 KiB: the proxy's own limit applies.
	r := send(t, proxyReq(t, "POST", url, proxyKey, bytes.NewReader(make([]byte, 1<<20))))
	if r.status != 200 || r.doc["bytes"] != float64(1<<20) {
		t.Errorf("1 MiB upload: %d %v", r.status, r.doc)
	}
	r = send(t, proxyReq(t, "POST", url, proxyKey, bytes.NewReader(make([]byte, 2<<20+1))))
	if r.status != 413 || r.doc["code"] != "request_too_large" {
		t.Errorf("too large: %d %v", r.status, r.doc)
	}
	// Without Content-Length, found while streaming.
	r = send(t, proxyReq(t, "POST", url, proxyKey, struct{ io.Reader }{bytes.NewReader(make([]byte, 2<<20+1))}))
	if r.status != 413 || r.doc["code"] != "request_too_large" {
		t.Errorf("too large, chunked: %d %v", r.status, r.doc)
	}
}

func TestGateway(t *testing.T) {
	f := newProxyFixture(t)
	withApp := func(req *http.Request, app string) *http.Request {
		req.Header.Set("X-Tokend-App", app)
		return req
	}
	basic := func(req *http.Request, user, pass string) *http.Request {
		req.SetBasicAuth(user, pass)
		return req
	}
	cases := []struct {
		name   string
		req    *http.Request
		status int
		code   string
		token  string // where DingTalk found the token
	}{
		{"bearer and header, api", withApp(proxyReq(t, "GET", f.gw.URL+"/v1.0/contact/users/manager", proxyKey, nil), "crm"), 200, "", "header"},
		{"bearer and header, oapi", withApp(proxyReq(t, "POST", f.gw.URL+"/topapi/v2/user/get", proxyKey, nil), "crm"), 200, "", "query"},
		{"basic auth", basic(proxyReq(t, "POST", f.gw.URL+"/topapi/v2/user/get", "", nil), "crm", proxyKey), 200, "", "query"},
		{"header wins over basic user", basic(withApp(proxyReq(t, "POST", f.gw.URL+"/topapi/v2/user/get", "", nil), "hr"), "crm", proxyKey), 403, "forbidden", ""},
		{"no app", proxyReq(t, "GET", f.gw.URL+"/v1.0/contact/users/x", proxyKey, nil), 400, "bad_request", ""},
		{"unknown app", withApp(proxyReq(t, "GET", f.gw.URL+"/v1.0/contact/users/x", proxyKey, nil), "nope"), 403, "forbidden", ""},
		{"wrong key", basic(proxyReq(t, "GET", f.gw.URL+"/v1.0/contact/users/x", "", nil), "crm", "nope"), 401, "unauthenticated", ""},
		{"not allowed", withApp(proxyReq(t, "DELETE", f.gw.URL+"/v1.0/contact/users/x", proxyKey, nil), "crm"), 403, "forbidden", ""},
		{"bad path", withApp(proxyReq(t, "GET", f.gw.URL+"/v1.0/contact/users/%2e%2e", proxyKey, nil), "crm"), 400, "bad_request", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := send(t, c.req)
			if r.status != c.status || (c.code != "" && r.doc["code"] != c.code) {
				t.Fatalf("got %d %v, want %d %s", r.status, r.doc, c.status, c.code)
			}
			switch c.token {
			case "header":
				if r.doc["header_token"] != "at-crm-1" || r.doc["query"] != "" {
					t.Errorf("DingTalk got %v", r.doc)
				}
			case "query":
				if r.doc["header_token"] != "" || r.doc["query"] != "access_token=at-crm-1" {
					t.Errorf("DingTalk got %v", r.doc)
				}
			}
		})
	}
	if ev := f.lastEvent(t); ev.Client != "svc" || ev.Family != "api" || ev.Status != 400 {
		t.Errorf("gateway audit event %+v", ev)
	}
}

func TestProxyDisabled(t *testing.T) {
	f := newFixture(t) // no Forwarder
	resp, doc := f.do(t, "GET", "/v1/apps/crm/proxy/api/v1.0/x", adminKey, "")
	if resp.StatusCode != 404 || doc["code"] != "not_found" || !strings.Contains(fmt.Sprint(doc["detail"]), "proxy") {
		t.Errorf("got %d %v", resp.StatusCode, doc)
	}
}
