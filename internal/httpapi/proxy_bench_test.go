package httpapi_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/token"
)

// BenchmarkProxyRoute is one proxied call through the whole client API (authentication, rules,
// proxy, metrics, an audit line) to a local upstream, over loopback. It is for profiling
// (-cpuprofile); bench/proxy.sh compares the real processes.
func BenchmarkProxyRoute(b *testing.B) {
	const answer = `{"errcode":0,"errmsg":"ok","request_id":"bench","result":{"userid":"manager","name":"Bench User","active":true}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer up.Close()
	br := &stubBroker{tokens: map[token.Key]token.Token{
		{App: "crm", Kind: token.AccessToken}: {Value: "at-crm-1", ExpiresAt: time.Now().Add(time.Hour)},
	}}
	reg := prometheus.NewRegistry()
	p, err := proxy.New(proxy.Options{Tokens: br, APIBase: up.URL, OAPIBase: up.URL, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	r, _ := proxyrule.Parse("* oapi:/**")
	audit := slog.New(slog.NewJSONHandler(io.Discard, nil))
	api, err := httpapi.New(httpapi.Options{
		Broker:     br,
		Apps:       []httpapi.App{{Name: "crm", Type: "dingtalk"}},
		Clients:    []httpapi.Client{{Name: "svc", KeySHA256: config.HashKey(proxyKey), Proxy: map[string]proxyrule.Set{"crm": {r}}}},
		Registerer: reg,
		Proxy:      p,
		ProxyAudit: func(e httpapi.ProxyEvent) {
			audit.Info("audit", "event", "proxy", "result", e.Result, "client", e.Client, "app", e.App, "method", e.Method,
				"family", e.Family, "path", e.Path, "status", e.Status, "upstream_code", e.UpstreamCode, "retried", e.Retried, "remote", e.Remote)
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := srv.URL + "/v1/apps/crm/proxy/oapi/topapi/v2/user/get"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+proxyKey)
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
