package httpapi

import (
	"net/http"
	"net/http/pprof"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the client API. Every route requires a bearer key; every response is no-store.
// Unknown paths get 404, other methods on a known path 405 (see router.go).
func (a *API) Handler() http.Handler {
	r := newRouter()
	r.get("/v1/apps", a.authenticated(a.listApps))
	r.lean(http.MethodGet, "/v1/apps/{app}/access_token", a.authenticated(a.getAccessToken)) // hot: no path-value map
	r.lean(http.MethodGet, "/v1/apps/{app}/jsapi_ticket", a.authenticated(a.getTicket))
	r.post("/v1/apps/{app}/access_token/invalidate", a.authenticated(a.invalidate))
	r.post("/v1/apps/{app}/jsapi_signature", a.authenticated(a.signature))
	// Third-party apps (isv.go).
	r.put("/v1/apps/{app}/suite_ticket", a.authenticated(a.putSuiteTicket))
	r.get("/v1/apps/{app}/corps", a.authenticated(a.listCorps))
	r.get("/v1/apps/{app}/corps/{corp}/access_token", a.authenticated(a.getCorpToken))
	r.post("/v1/apps/{app}/corps/{corp}/access_token/invalidate", a.authenticated(a.invalidateCorp))
	r.get("/v1/apps/{app}/corps/{corp}/jsapi_ticket", a.authenticated(a.getCorpTicket))
	r.post("/v1/apps/{app}/corps/{corp}/jsapi_signature", a.authenticated(a.corpSignature))
	r.post("/v1/apps/{app}/user_token", a.authenticated(a.userToken))
	r.post("/v1/apps/{app}/stream_ticket", a.authenticated(a.streamTicket))
	r.post("/v1/robots/{robot}/send", a.authenticated(a.robotSend))
	// The proxy routes (every method, any DingTalk path) are matched before the router, which would
	// turn a path with dot segments into a 404: for them it is a 400 (proxy.go).
	return a.withProxy(r.wrapped(a.chain))
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
