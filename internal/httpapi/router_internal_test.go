package httpapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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

// refMatch is the plain reading of a pattern against a path: split both on "/", literals equal,
// {name} a non-empty segment, {name...} the rest after its "/" (possibly empty). The router's match must agree with it.
func refMatch(pattern, path string) (map[string]string, bool) {
	if !strings.HasPrefix(path, "/") {
		return nil, false
	}
	pat, p := strings.Split(pattern[1:], "/"), strings.Split(path[1:], "/")
	vals := map[string]string{}
	for i, seg := range pat {
		if i >= len(p) {
			return nil, false
		}
		if name, ok := strings.CutSuffix(seg, "...}"); ok {
			vals[name[1:]] = strings.Join(p[i:], "/")
			return vals, true
		}
		if strings.HasPrefix(seg, "{") {
			if p[i] == "" {
				return nil, false
			}
			vals[seg[1:len(seg)-1]] = p[i]
		} else if seg != p[i] {
			return nil, false
		}
	}
	if len(p) != len(pat) {
		return nil, false
	}
	return vals, true
}

// FuzzRouteMatch checks the router's in-place match, and pathValue on lean routes, against refMatch
// for the client API's patterns and some made up.
func FuzzRouteMatch(f *testing.F) {
	patterns := []string{"/v1/apps/{app}/access_token", "/v1/apps/{app}/corps/{corp}/access_token", "/v1/apps",
		"/v1/apps/{app}/proxy/{family}/{path...}", "/v1/{ap}/x/{app}", "/{path...}", "/v1/robots/{robot}/send"}
	for _, p := range []string{"/v1/apps/crm/access_token", "/v1/apps/crm/corps/ding1/access_token", "/v1/apps",
		"/v1/apps/crm/proxy/oapi/a/b", "/v1/ap/x/app", "/", "//", "/v1/apps//access_token", "/v1/apps/crm/access_tokenx",
		"/v1/robots/r1/send/", "v1/apps"} {
		f.Add(p)
	}
	names := []string{"app", "corp", "family", "path", "ap", "robot", "nope"}
	f.Fuzz(func(t *testing.T, path string) {
		for _, pat := range patterns {
			rt := newRouter()
			rt.add(http.MethodGet, pat, nil, true)
			rte := &rt.routes[0]
			want, ok := refMatch(pat, path)
			if got := rte.match(path, nil); got != ok {
				t.Fatalf("%s on %q: match %v, reference %v", pat, path, got, ok)
			}
			if !ok {
				continue
			}
			r := &http.Request{Pattern: pat, URL: &url.URL{Path: path}}
			for _, n := range names {
				if got := pathValue(r, n); got != want[n] {
					t.Fatalf("%s on %q: pathValue(%s) = %q, reference %q", pat, path, n, got, want[n])
				}
			}
		}
	})
}
