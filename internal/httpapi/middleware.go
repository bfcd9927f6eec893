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
			c = s.authenticate(bearer(r.Header.Get("Authorization")))
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

// noStore forbids caching of every response: they carry credentials.
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Cache-Control"] = []string{"no-store"}
		next.ServeHTTP(w, r)
	})
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

// instrument counts and times requests by route pattern (never the raw path) and status.
func (a *API) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		a.m.observe(routeOf(r), sw.status, time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
