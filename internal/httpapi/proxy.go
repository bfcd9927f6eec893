package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/proxyrule"
)

// Forwarder sends one permitted request to DingTalk and streams the answer. *proxy.Proxy
// implements it; see proxy.Proxy.Forward for the contract.
type Forwarder interface {
	Forward(w http.ResponseWriter, r *http.Request, t proxy.Target) (proxy.Outcome, error)
}

// ProxyEvent is the audit record of one proxied call (allowed or not). It never holds a key, a
// token or the query.
type ProxyEvent struct {
	Client, App, Method, Family string
	// Corp is the third-party app's corp whose token was used, "" for the app's own.
	Corp string
	// Path is DingTalk's path, without the query.
	Path string
	// Status is what the caller got; UpstreamCode is DingTalk's error code, if any.
	Status       int
	UpstreamCode string
	Retried      bool
	// Result is "ok" for DingTalk's answer (whatever it says), else tokend's problem code.
	Result string
	Remote string
}

// The proxy routes' own refusals, mapped by problemFor; their texts are the details clients see.
var (
	errProxyDenied   = errors.New("no proxy rule of this client allows this call")
	errNoFamily      = errors.New("the family must be api or oapi")
	errProxyDisabled = errors.New("the proxy is not enabled")
	// TRACE would echo the request, token included, back to the caller; CONNECT is no API call.
	errProxyMethod  = errors.New("TRACE and CONNECT are never proxied")
	errNoGatewayApp = &badRequestError{"name the app with the X-Tokend-App header or as the Basic-auth user name"}
)

// statusClientClosed is the audit status of a call whose caller went away before the answer.
const statusClientClosed = 499

// maxAuditPath bounds the path written to the audit log.
const maxAuditPath = 512

// proxyPattern and corpProxyPattern are the proxy routes' patterns, their metrics labels.
const (
	proxyPattern     = "/v1/apps/{app}/proxy/{family}/{path...}"
	corpProxyPattern = "/v1/apps/{app}/corps/{corp}/proxy/{family}/{path...}"
)

// withProxy serves the proxy routes, /v1/apps/{app}/proxy/{family}/{path...} for every method, and
// hands every other request to next. It reads the path as the caller escaped it: the DingTalk path is
// judged by proxyrule.Clean (dot segments and encoded slashes are a 400, not a 404 or a redirect), and
// an app name, which never needs an escape, is taken as written ("cr%6d" is not crm).
func (a *API) withProxy(next http.Handler) http.Handler {
	// One chain per pattern: metrics are bound to the route's pattern when the chain is built.
	proxied := a.chain(proxyPattern, a.authenticated(a.proxyRoute))
	corpProxied := a.chain(corpProxyPattern, a.authenticated(a.proxyRoute))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every token request passes here. A proxy path has a "/proxy/" segment in its escaped form,
		// and what the escaped path has literally the decoded one has too: a decoded path without it
		// is the router's, at the cost of one search.
		if !strings.Contains(r.URL.Path, "/proxy/") {
			next.ServeHTTP(w, r)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/apps/")
		app, rest, ok2 := strings.Cut(rest, "/") // {app}, then {seg}/…
		seg, rest, ok3 := strings.Cut(rest, "/")
		if !ok || !ok2 || !ok3 || app == "" {
			next.ServeHTTP(w, r)
			return
		}
		h, corp := proxied, ""
		if seg == "corps" { // {corp}/proxy/{family}/{path...}
			corp, rest, ok = strings.Cut(rest, "/")
			seg, rest, ok2 = strings.Cut(rest, "/")
			if !ok || !ok2 || corp == "" {
				next.ServeHTTP(w, r)
				return
			}
			h = corpProxied
		}
		if seg != "proxy" {
			next.ServeHTTP(w, r)
			return
		}
		family, path, _ := strings.Cut(rest, "/")
		if corp != "" {
			r.Pattern = corpProxyPattern
			r.SetPathValue("corp", corp)
		} else {
			r.Pattern = proxyPattern
		}
		r.SetPathValue("app", app)
		r.SetPathValue("family", family)
		r.SetPathValue("path", path)
		h(w, r)
	})
}

// proxyRoute serves the proxy routes for an authenticated client.
func (a *API) proxyRoute(w http.ResponseWriter, r *http.Request, c *client) {
	fam, ok := proxyrule.ParseFamily(r.PathValue("family"))
	if !ok {
		writeProblem(w, errNoFamily)
		return
	}
	a.serveProxy(w, r, c, r.PathValue("app"), r.PathValue("corp"), fam, "/"+r.PathValue("path"))
}

// GatewayHandler returns the gateway listener: DingTalk's own paths (/v1.0/… to the api family,
// everything else to oapi), the app named by X-Tokend-App or the Basic-auth user name, the client
// by its bearer key or the Basic-auth password. It serves through the same code as the proxy
// routes: rules, limits, budget, retry, metrics and audit are theirs.
func (a *API) GatewayHandler() http.Handler {
	return a.chain(gatewayPattern, a.gateway)
}

// gatewayPattern is the gateway's metrics label: every path is DingTalk's.
const gatewayPattern = "/{path...}"

func (a *API) gateway(w http.ResponseWriter, r *http.Request) {
	r.Pattern = gatewayPattern
	key := bearer(r.Header.Get("Authorization"))
	app := r.Header.Get("X-Tokend-App")
	if user, pass, ok := r.BasicAuth(); ok && key == "" {
		key = pass
		if app == "" {
			app = user
		}
	}
	s := a.cfg.Load()
	c := s.fromCert(r.TLS)
	if c == nil {
		c = s.authenticate(key)
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
	if app == "" {
		writeProblem(w, errNoGatewayApp)
		return
	}
	path := r.URL.EscapedPath()
	fam := proxyrule.OAPI
	if strings.HasPrefix(path, "/v1.0/") {
		fam = proxyrule.API
	}
	a.serveProxy(w, r, c, app, r.Header.Get("X-Tokend-Corp"), fam, path)
}

// serveProxy checks the path and the client's rules, then forwards. escaped is DingTalk's path as
// the caller escaped it.
// corp, when not "", names a third-party app's corp whose token is used.
func (a *API) serveProxy(w http.ResponseWriter, r *http.Request, c *client, app, corp string, fam proxyrule.Family, escaped string) {
	ev := ProxyEvent{Client: c.name, App: app, Corp: corp, Method: r.Method, Family: string(fam), Path: escaped, Remote: r.RemoteAddr}
	if len(ev.Path) > maxAuditPath {
		ev.Path = ev.Path[:maxAuditPath] + "…"
	}
	fail := func(err error) {
		p := problemFor(err)
		ev.Status, ev.Result = p.status, p.code
		a.paudit(ev)
		writeProblem(w, err)
	}
	if a.fwd == nil {
		writeProblem(w, errProxyDisabled)
		return
	}
	if r.Method == http.MethodTrace || r.Method == http.MethodConnect {
		fail(errProxyMethod)
		return
	}
	path, err := proxyrule.Clean(escaped)
	if err != nil {
		fail(err)
		return
	}
	if !c.proxy[app].Allows(r.Method, fam, path.Segments) {
		fail(errProxyDenied)
		return
	}
	if corp != "" {
		// A permission on a third-party app covers all its corps.
		if ap := a.cfg.Load().apps[app]; ap == nil || !ap.ISV {
			fail(broker.ErrUnknownApp)
			return
		}
		if !dingtalk.ValidCorpID(corp) {
			fail(&broker.CorpNotFoundError{})
			return
		}
	}
	out, err := a.fwd.Forward(w, r, proxy.Target{App: app, Corp: corp, Family: fam, Path: path})
	ev.Retried, ev.UpstreamCode = out.Retried, out.UpstreamCode
	if err != nil && r.Context().Err() != nil {
		// The caller went away: nobody reads an answer. 499 as web servers log it.
		ev.Status, ev.Result = statusClientClosed, "canceled"
		a.paudit(ev)
		return
	}
	if err != nil {
		fail(err)
		return
	}
	ev.Status, ev.Result = out.Status, "ok"
	a.paudit(ev)
	if out.Abort {
		// DingTalk's answer broke off after its status went out: drop the connection so that the
		// caller cannot take what it got for the whole answer.
		panic(http.ErrAbortHandler)
	}
}
