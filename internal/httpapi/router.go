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
	pattern string    // "/v1/apps/{app}/access_token": r.Pattern and the metrics label
	segs    []segment // v1, apps, {app}, access_token
	h       http.HandlerFunc
	lean    bool // no r.SetPathValue: h reads its values with pathValue
}

// segment is one segment of a route's pattern: a literal, or a wildcard's name.
type segment struct {
	s    string // the literal, or the wildcard's name ("app" for {app} and {app...})
	kind segKind
}

type segKind uint8

const (
	literal  segKind = iota
	wildcard         // {name}: one non-empty segment
	trailing         // {name...}: the rest of the path, possibly empty
)

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
	parts := strings.Split(pattern[1:], "/")
	segs := make([]segment, len(parts))
	for i, s := range parts {
		wild := strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}")
		if s == "" || strings.ContainsAny(s, "{}") && !wild || strings.HasSuffix(s, "...}") && i != len(parts)-1 {
			panic(fmt.Sprintf("httpapi: invalid pattern %q", pattern))
		}
		switch {
		case !wild:
			segs[i] = segment{s, literal}
		case strings.HasSuffix(s, "...}"):
			segs[i] = segment{s[1 : len(s)-4], trailing}
		default:
			segs[i] = segment{s[1 : len(s)-1], wildcard}
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
// wildcard, or does not fit the path.
//
// The pattern matched the path, so each literal stretch of the pattern is the same stretch of the
// path, at an offset that moves by the length of each wildcard's value: only the values are searched
// for their end.
func pathValue(r *http.Request, name string) string {
	if v := r.PathValue(name); v != "" {
		return v
	}
	pat, p := r.Pattern, matchedPath(r)
	for {
		i := strings.IndexByte(pat, '{')
		if i < 0 || i > len(p) || pat[:i] != p[:i] {
			return ""
		}
		pat, p = pat[i+1:], p[i:]
		end := strings.IndexByte(pat, '}')
		if end < 0 {
			return ""
		}
		wild := pat[:end]
		if w, ok := strings.CutSuffix(wild, "..."); ok {
			if w == name {
				return p
			}
			return ""
		}
		j := strings.IndexByte(p, '/')
		if j < 0 {
			j = len(p)
		}
		if wild == name {
			return p[:j]
		}
		pat, p = pat[end+1:], p[j:]
	}
}

// match reports whether the path p fits the route; given r, it also sets r's path values from p.
// Literal segments are compared in place; only a wildcard's value is searched for its end.
func (rte *route) match(p string, r *http.Request) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	rest := p[1:]
	last := len(rte.segs) - 1
	for i := range rte.segs {
		sg := &rte.segs[i]
		switch sg.kind {
		case trailing:
			if r != nil {
				r.SetPathValue(sg.s, rest)
			}
			return true
		case literal:
			if !strings.HasPrefix(rest, sg.s) {
				return false
			}
			rest = rest[len(sg.s):]
		default:
			j := strings.IndexByte(rest, '/')
			if j < 0 {
				j = len(rest)
			}
			if j == 0 {
				return false
			}
			if r != nil {
				r.SetPathValue(sg.s, rest[:j])
			}
			rest = rest[j:]
		}
		// The segment must end where the path's does: at the path's end for the last one, at a "/"
		// for the others (what follows it is the next segment's to check).
		if i == last {
			return rest == ""
		}
		if rest == "" || rest[0] != '/' {
			return false
		}
		rest = rest[1:]
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
