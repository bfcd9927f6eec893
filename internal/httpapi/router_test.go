package httpapi_test

import (
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/token"
)

// TestRouting pins what the router answers for paths and methods it does not serve as written:
// problems, never a redirect to a cleaned path, and app names matched as written.
func TestRouting(t *testing.T) {
	at := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	reg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Options{
		Broker:     &benchBroker{t: token.Token{Value: benchToken, ExpiresAt: at.Add(time.Hour)}},
		Apps:       []httpapi.App{{Name: "crm", Type: "dingtalk"}},
		Clients:    []httpapi.Client{{Name: "all", KeySHA256: config.HashKey(benchKey), Apps: []string{"*"}}},
		Now:        func() time.Time { return at },
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/apps/crm/access_token", 200, ""},
		{"HEAD", "/v1/apps/crm/access_token", 405, ""},
		{"POST", "/v1/apps/crm/access_token", 405, "method_not_allowed"},
		{"FROB", "/v1/apps", 405, "method_not_allowed"},
		{"GET", "/v1/apps/crm/access_token/invalidate", 405, "method_not_allowed"},
		{"GET", "/v1/apps/crm/../crm/access_token", 404, "not_found"},
		{"GET", "/v1/apps/crm/%2e/access_token", 404, "not_found"},
		{"GET", "//v1/apps/crm/access_token", 404, "not_found"},
		{"GET", "/v1/apps/crm/access_token/", 404, "not_found"},
		{"GET", "/v1/apps/crm", 404, "not_found"},
		{"GET", "/", 404, "not_found"},
		{"GET", "/v1/apps/cr%6d/access_token", 404, "app_not_found"},
		{"GET", "/v1/apps/crm%2Fx/access_token", 404, "app_not_found"},
	}
	for _, c := range cases {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, c.method+" "+c.path+" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer "+benchKey+"\r\n\r\n")
		raw, _ := io.ReadAll(conn)
		conn.Close()
		resp := string(raw)
		if !strings.HasPrefix(resp, "HTTP/1.1 "+strconv.Itoa(c.status)+" ") {
			line, _, _ := strings.Cut(resp, "\r\n")
			t.Errorf("%s %s: %s, want %d", c.method, c.path, line, c.status)
			continue
		}
		if c.code != "" && !strings.Contains(resp, `"code":"`+c.code+`"`) {
			t.Errorf("%s %s: body lacks code %s:\n%s", c.method, c.path, c.code, resp)
		}
		if !strings.Contains(resp, "Cache-Control: no-store") {
			t.Errorf("%s %s: no Cache-Control: no-store", c.method, c.path)
		}
	}
	// Metrics carry route patterns, never raw paths: unrouted requests are "unmatched".
	if got := requests(t, reg, "unmatched", "404"); got != 6 {
		t.Errorf(`route="unmatched",code="404": %v, want 6`, got)
	}
	if got := requests(t, reg, "/v1/apps/{app}/access_token", "200"); got != 1 {
		t.Errorf(`route="/v1/apps/{app}/access_token",code="200": %v, want 1`, got)
	}
}

// requests is the value of tokend_http_requests_total{route,code}, 0 when the series does not exist.
func requests(t *testing.T, g prometheus.Gatherer, route, code string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokend_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
