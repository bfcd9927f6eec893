package httpapi

import (
	"fmt"
	"net/http"
	"strings"
)

// router routes the client API: a list of routes matched segment by segment, in place. It sets the
// path values and r.Pattern on the request itself, where chi's Mux copies the request (and allocates a
// context node) on every request, and where net/http's ServeMux spends as much again stripping the
// host, cleaning the path and walking its tree (see docs/benchmarks.md). The ops API, which is not on
// the hot path, stays on chi.
//
// A pattern is a path whose segments are literals, {name} (one non-empty segment) or, last,
// {name...} (the rest of the path, possibly empty). Requests are matched as they were written: on
// the escaped path when it carries percent-escapes, as chi did, so "/v1/apps/cr%6d/access_token"
// names the app "cr%6d", never crm. A path that fits no route gets 404 (so do unclean ones: "..",
// "//", a trailing slash never fit a pattern); one that fits a route for another method gets 405.
type router struct {
	routes []route
	// unmatched answers the requests no route fits (404 or 405); wrapped routes it too.
	unmatched func(w http.ResponseWriter, r *http.Request, otherMethod bool)
}

type route struct {
	method  string
	pattern string   // "/v1/apps/{app}/access_token": r.Pattern and the metrics label
	segs    []string // "v1", "apps", "{app}", "access_token"
	h       http.HandlerFunc
	lean    bool // no r.SetPathValue: h reads its values with pathValue
}

func newRouter() *router {
	return &router{unmatched: func(w http.ResponseWriter, _ *http.Request, otherMethod bool) {
		if otherMethod {
			writeProblem(w, errMethodNotAllowed)
			return
		}
		writeProblem(w, errNoRoute)
	}}
}

// wrapped wraps every route's handler, once, with wrap(pattern, h), and the 404/405 answers with
// wrap("unmatched", ...): what runs around every request (metrics bound to the route's series, panic
// recovery, no-store) is built at registration rather than looked up per request. Call it after
// the last handle.
func (rt *router) wrapped(wrap func(pattern string, h http.HandlerFunc) http.HandlerFunc) *router {
	for i := range rt.routes {
		rt.routes[i].h = wrap(rt.routes[i].pattern, rt.routes[i].h)
	}
	inner := rt.unmatched
	notFound := wrap("unmatched", func(w http.ResponseWriter, r *http.Request) { inner(w, r, false) })
	notAllowed := wrap("unmatched", func(w http.ResponseWriter, r *http.Request) { inner(w, r, true) })
	rt.unmatched = func(w http.ResponseWriter, r *http.Request, otherMethod bool) {
		if otherMethod {
			notAllowed(w, r)
			return
		}
		notFound(w, r)
	}
	return rt
}

// handle serves method on pattern with h. An invalid pattern is a programming error: it panics, as
// net/http's ServeMux does.
func (rt *router) handle(method, pattern string, h http.HandlerFunc) {
	rt.add(method, pattern, h, false)
}

// lean is handle for a handler that reads its path values with pathValue rather than
// r.PathValue: the router leaves them unset, which spares the map r.SetPathValue allocates on every
// request (two allocations, 336 bytes; see docs/benchmarks.md). For the hot routes.
func (rt *router) lean(method, pattern string, h http.HandlerFunc) {
	rt.add(method, pattern, h, true)
}

func (rt *router) add(method, pattern string, h http.HandlerFunc, lean bool) {
	if !strings.HasPrefix(pattern, "/") {
		panic(fmt.Sprintf("httpapi: pattern %q does not start with /", pattern))
	}
	segs := strings.Split(pattern[1:], "/")
	for i, s := range segs {
		wild := strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}")
		if s == "" || strings.ContainsAny(s, "{}") && !wild || strings.HasSuffix(s, "...}") && i != len(segs)-1 {
			panic(fmt.Sprintf("httpapi: invalid pattern %q", pattern))
		}
	}
	rt.routes = append(rt.routes, route{method: method, pattern: pattern, segs: segs, h: h, lean: lean})
}

func (rt *router) get(p string, h http.HandlerFunc)  { rt.handle(http.MethodGet, p, h) }
func (rt *router) post(p string, h http.HandlerFunc) { rt.handle(http.MethodPost, p, h) }
func (rt *router) put(p string, h http.HandlerFunc)  { rt.handle(http.MethodPut, p, h) }

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := matchedPath(r)
	otherMethod := false
	for i := range rt.routes {
		rte := &rt.routes[i]
		if !rte.match(p, nil) {
			continue
		}
		if rte.method != r.Method {
			otherMethod = true
			continue
		}
		if !rte.lean {
			rte.match(p, r)
		}
		r.Pattern = rte.pattern
		rte.h(w, r)
		return
	}
	rt.unmatched(w, r, otherMethod)
}

// matchedPath is the path routes are matched on: the escaped one when it carries percent-escapes.
func matchedPath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// pathValue is r.PathValue(name) for the route that matched r, also when the route is lean: the
// segment of the matched path where r.Pattern has {name} (the rest of the path for {name...}), the
// same string match would have set, found without allocating. "" when r.Pattern has no such
// wildcard.
func pathValue(r *http.Request, name string) string {
	if v := r.PathValue(name); v != "" {
		return v
	}
	pat, p := r.Pattern, matchedPath(r)
	if pat == "" || pat[0] != '/' || p == "" || p[0] != '/' {
		return ""
	}
	pat, p = pat[1:], p[1:]
	for {
		seg, patRest, patMore := strings.Cut(pat, "/")
		val, pRest, pMore := strings.Cut(p, "/")
		if len(seg) == len(name)+5 && seg[0] == '{' && seg[1:len(name)+1] == name && seg[len(name)+1:] == "...}" {
			return p
		}
		if len(seg) == len(name)+2 && seg[0] == '{' && seg[1:len(name)+1] == name && seg[len(seg)-1] == '}' {
			return val
		}
		if !patMore || !pMore {
			return ""
		}
		pat, p = patRest, pRest
	}
}

// match reports whether the path p fits the route; given r, it also sets r's path values from p.
func (rte *route) match(p string, r *http.Request) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	rest := p[1:]
	for i, seg := range rte.segs {
		if name, ok := strings.CutSuffix(seg, "...}"); ok {
			if r != nil {
				r.SetPathValue(name[1:], rest)
			}
			return true
		}
		last := i == len(rte.segs)-1
		s, after, more := strings.Cut(rest, "/")
		if more == last {
			return false // the path has more segments than the pattern, or fewer
		}
		rest = after
		if seg[0] != '{' {
			if s != seg {
				return false
			}
			continue
		}
		if s == "" {
			return false
		}
		if r != nil {
			r.SetPathValue(seg[1:len(seg)-1], s)
		}
	}
	return true
}

// routeOf is the metrics label of a request: the pattern of the route that served it
// ("/v1/apps/{app}/access_token"), or "unmatched". Never the raw path.
func routeOf(r *http.Request) string {
	p := r.Pattern
	if i := strings.IndexByte(p, ' '); i >= 0 { // a pattern of chi or ServeMux with its method
		p = p[i+1:]
	}
	if p == "" || p == "/" {
		return "unmatched"
	}
	return p
}
