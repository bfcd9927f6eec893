package httpapi

import (
	"net/http"
	"path"
	"strings"
)

// router routes the client API with net/http's ServeMux, answering unknown paths and methods with
// tokend's problems. It routes in place: ServeMux sets the path values and r.Pattern on the request
// itself, where chi's Mux copies the request (and allocates a context node and a path-value map) on
// every request, about a third of the hot path's own CPU in BenchmarkGetAccessToken (see
// docs/benchmarks.md). The ops API, which is not on the hot path, stays on chi.
type router struct {
	mux   *http.ServeMux
	paths map[string]bool
}

func newRouter() *router {
	rt := &router{mux: http.NewServeMux(), paths: map[string]bool{}}
	rt.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { writeProblem(w, errNoRoute) })
	return rt
}

func methodNotAllowed(w http.ResponseWriter, _ *http.Request) { writeProblem(w, errMethodNotAllowed) }

// handle serves method on the path pattern p ("/v1/apps/{app}/access_token") with h. Any other
// method on p gets 405, HEAD included (ServeMux would hand a HEAD to the GET handler).
func (rt *router) handle(method, p string, h http.HandlerFunc) {
	rt.mux.HandleFunc(method+" "+p, h)
	if method == http.MethodGet {
		rt.mux.HandleFunc(http.MethodHead+" "+p, methodNotAllowed)
	}
	if !rt.paths[p] {
		rt.paths[p] = true
		rt.mux.HandleFunc(p, methodNotAllowed)
	}
}

func (rt *router) get(p string, h http.HandlerFunc)  { rt.handle(http.MethodGet, p, h) }
func (rt *router) post(p string, h http.HandlerFunc) { rt.handle(http.MethodPost, p, h) }

// ServeHTTP answers 404 for a path that is not clean (dot segments, double or trailing slashes, also
// percent-encoded) where ServeMux would redirect to the cleaned path, so a client is never sent on to
// another route or another app's; and for "*" or any other path not starting with a slash.
func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
		writeProblem(w, errNoRoute)
		return
	}
	rt.mux.ServeHTTP(w, r)
}

// routeOf is the metrics label of a request: the pattern of the route that served it, without the
// method ("/v1/apps/{app}/access_token"), or "unmatched". Never the raw path.
func routeOf(r *http.Request) string {
	p := r.Pattern
	if i := strings.IndexByte(p, ' '); i >= 0 {
		p = p[i+1:]
	}
	if p == "" || p == "/" {
		return "unmatched"
	}
	return p
}

// pathValue is r.PathValue(name) as the client wrote it: when the path carries percent-escapes it is
// the segment undecoded, as chi matched it. An app name never needs an escape, so "cr%6d" names no
// app, not crm, and "crm%2Fx" is not crm either.
func pathValue(r *http.Request, name string) string {
	raw := r.URL.RawPath
	if raw == "" {
		return r.PathValue(name)
	}
	_, pat, _ := strings.Cut(r.Pattern, " ")
	want := "{" + name + "}"
	for i, seg := range strings.Split(pat, "/") {
		if seg == want {
			if segs := strings.Split(raw, "/"); i < len(segs) {
				return segs[i]
			}
		}
	}
	return r.PathValue(name)
}
