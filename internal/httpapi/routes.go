package httpapi

import (
	"net/http"
	"net/http/pprof"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the client API. Every route requires a bearer key; every response is no-store.
func (a *API) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(a.instrument, recoverPanics(a.log), noStore)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) { writeProblem(w, errNoRoute) })
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) { writeProblem(w, errMethodNotAllowed) })
	r.Get("/v1/apps", a.authenticated(a.listApps))
	r.Get("/v1/apps/{app}/access_token", a.authenticated(a.getAccessToken))
	r.Get("/v1/apps/{app}/jsapi_ticket", a.authenticated(a.getTicket))
	r.Post("/v1/apps/{app}/access_token/invalidate", a.authenticated(a.invalidate))
	r.Post("/v1/apps/{app}/jsapi_signature", a.authenticated(a.signature))
	// Every method: the proxy forwards what the client's rules allow (proxy.go).
	r.Handle("/v1/apps/{app}/proxy/{family}/*", a.authenticated(a.proxyRoute))
	return r
}

// OpsHandler returns the ops API: /healthz, /readyz and /metrics (and, with Options.Pprof,
// /debug/pprof/), unauthenticated (keep it on a private interface).
func (a *API) OpsHandler() http.Handler {
	r := chi.NewRouter()
	r.Use(recoverPanics(a.log))
	r.Get("/healthz", a.healthz)
	r.Get("/readyz", a.readyz)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(a.gather, promhttp.HandlerOpts{}))
	if a.pprof {
		r.Get("/debug/pprof/cmdline", pprof.Cmdline)
		r.Get("/debug/pprof/profile", pprof.Profile)
		r.Get("/debug/pprof/symbol", pprof.Symbol)
		r.Get("/debug/pprof/trace", pprof.Trace)
		r.Get("/debug/pprof/*", pprof.Index) // heap, goroutine, allocs... by name
	}
	return r
}
