package httpapi

import (
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// clientHandler is a client API handler: it gets the authenticated client as an argument.
type clientHandler func(w http.ResponseWriter, r *http.Request, c *client)

// authenticated admits requests carrying a known bearer key (or client certificate) and hands the
// client to h. The client is an argument rather than a context value: a context value costs a copy of
// the whole request on every request, and only this package's handlers need it.
func (a *API) authenticated(h clientHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := a.cfg.Load()
		c := s.fromCert(r.TLS)
		if c == nil {
			var h string // r.Header.Get without canonicalising a key net/http has canonicalised
			if v := r.Header["Authorization"]; len(v) > 0 {
				h = v[0]
			}
			c = s.authenticate(bearer(h))
		}
		if c == nil {
			a.audit(Event{Type: "auth_failure", Remote: r.RemoteAddr, Result: "unauthenticated"})
			writeProblem(w, errUnauthenticated)
			return
		}
		if c.limiter != nil {
			if wait := c.limiter.take(); wait > 0 {
				a.audit(Event{Type: "rate_limited", Client: c.name, Remote: r.RemoteAddr, Result: "rate_limited"})
				writeProblem(w, &clientLimitError{retryAfter: wait})
				return
			}
		}
		h(w, r, c)
	}
}

// bearer returns the credentials of an "Authorization: Bearer <key>" header, "" for anything else.
func bearer(h string) string {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}

// recoverPanics turns a handler panic into a 500 problem, logging only the route (never the request,
// which may carry a key or a token).
func recoverPanics(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.Error("handler panic", "route", routeOf(r))
					writeProblem(w, errPanic)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// chain is what runs around every client API route's handler, built once per route when the
// router is wrapped (routes.go): it counts and times the request under the route's pattern (never
// the raw path) and status, with the route's series bound here rather than looked up per request;
// turns a panic into a 500 problem; and forbids caching of every response, which carry credentials.
// One closure per route instead of a middleware per concern: one call and one writer per request.
func (a *API) chain(pattern string, h http.HandlerFunc) http.HandlerFunc {
	rm := a.m.bind(pattern)
	noStore := a.hdr.noStore
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := a.writers.Get().(*statusWriter)
		sw.ResponseWriter, sw.status = w, http.StatusOK
		w.Header()["Cache-Control"] = noStore
		defer func() {
			// A panic becomes a 500 problem, logged with the route only (never the request, which
			// may carry a key or a token). One deferred call per request does recovery and metrics.
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("handler panic", "route", pattern)
				writeProblem(sw, errPanic)
			}
			rm.observe(sw.status, time.Since(start))
			sw.ResponseWriter = nil
			a.writers.Put(sw)
		}()
		h(sw, r)
	}
}

// statusWriter records the status a handler wrote. chain takes them from a pool: the handler may
// not keep its ResponseWriter past its return (net/http's rule), so neither is the wrapper kept.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
