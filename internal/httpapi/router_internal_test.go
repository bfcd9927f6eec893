package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRouteMatch covers what TestRouting cannot reach through today's routes: the trailing
// {name...} wildcard the proxy routes will need, and invalid patterns.
func TestRouteMatch(t *testing.T) {
	rt := newRouter()
	var got map[string]string
	record := func(names ...string) http.HandlerFunc {
		return func(_ http.ResponseWriter, r *http.Request) {
			got = map[string]string{"pattern": r.Pattern}
			for _, n := range names {
				got[n] = r.PathValue(n)
			}
		}
	}
	rt.get("/v1/apps/{app}/proxy/{family}/{path...}", record("app", "family", "path"))
	rt.get("/v1/apps/{app}", record("app"))
	cases := []struct {
		path   string
		status int
		want   map[string]string
	}{
		{"/v1/apps/crm/proxy/oapi/topapi/v2/user/get", 200, map[string]string{"app": "crm", "family": "oapi", "path": "topapi/v2/user/get"}},
		{"/v1/apps/crm/proxy/api/", 200, map[string]string{"app": "crm", "family": "api", "path": ""}},
		{"/v1/apps/crm/proxy/api", 404, nil},
		{"/v1/apps//proxy/api/x", 404, nil},
		{"/v1/apps/crm", 200, map[string]string{"app": "crm"}},
		{"/v1/apps/crm/", 404, nil},
		{"/v1/apps", 404, nil},
	}
	for _, c := range cases {
		got = nil
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, httptest.NewRequest(http.MethodGet, c.path, nil))
		if w.Code != c.status {
			t.Errorf("%s: %d, want %d", c.path, w.Code, c.status)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", c.path, k, got[k], v)
			}
		}
		if c.want != nil && got["pattern"] == "" {
			t.Errorf("%s: r.Pattern not set", c.path)
		}
	}
	for _, bad := range []string{"v1/apps", "/v1//apps", "/v1/{path...}/x", "/v1/a{b}", "/v1/{app"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("pattern %q accepted", bad)
				}
			}()
			newRouter().get(bad, record())
		}()
	}
}

// TestPathValueLean checks that pathValue on a lean route finds what r.SetPathValue would have set
// on a regular one, for every name, on paths with escapes, empty rests and wildcards named alike.
func TestPathValueLean(t *testing.T) {
	patterns := []string{"/v1/apps/{app}/proxy/{family}/{path...}", "/v1/apps/{app}", "/v1/apps/{app}/access_token",
		"/v1/{ap}/x/{app}", "/{path...}"}
	names := []string{"app", "family", "path", "ap", "nope"}
	paths := []string{"/v1/apps/crm/proxy/oapi/topapi/v2/user/get", "/v1/apps/crm/proxy/api/", "/v1/apps/cr%2Fm/access_token",
		"/v1/apps/cr%6d", "/v1/apps/crm/access_token", "/v1/apps/x/x/crm", "/", "/a/b/", "/v1/ap/x/app"}
	for _, lean := range []bool{false, true} {
		for _, pat := range patterns {
			var got map[string]string
			rt := newRouter()
			h := func(_ http.ResponseWriter, r *http.Request) {
				got = map[string]string{}
				for _, n := range names {
					got[n] = pathValue(r, n)
				}
			}
			rt.add(http.MethodGet, pat, h, lean)
			ref := newRouter()
			var want map[string]string
			ref.get(pat, func(_ http.ResponseWriter, r *http.Request) {
				want = map[string]string{}
				for _, n := range names {
					want[n] = r.PathValue(n)
				}
			})
			for _, p := range paths {
				got, want = nil, nil
				rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, p, nil))
				ref.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, p, nil))
				if (got == nil) != (want == nil) {
					t.Fatalf("lean=%v %s on %s: matched %v, reference %v", lean, pat, p, got != nil, want != nil)
				}
				for _, n := range names {
					if got[n] != want[n] {
						t.Errorf("lean=%v %s on %s: %s = %q, want %q", lean, pat, p, n, got[n], want[n])
					}
				}
			}
		}
	}
}
