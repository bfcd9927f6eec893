package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// DingTalk's hosts, which Transport sends through tokend's proxy.
const (
	APIHost  = "api.dingtalk.com"  // the new API: the proxy's "api" family
	OAPIHost = "oapi.dingtalk.com" // the legacy API: the proxy's "oapi" family
)

// ErrNotDingTalk is returned (wrapped) by a Transport for a request addressed to any host but
// APIHost or OAPIHost: the client key is never sent with it.
var ErrNotDingTalk = errors.New("not a DingTalk API host")

// Transport returns an http.RoundTripper that sends requests addressed to DingTalk's own URLs
// (https://api.dingtalk.com/… and https://oapi.dingtalk.com/…) through tokend's proxy for app
// (POST https://oapi.dingtalk.com/topapi/v2/user/get goes to …/v1/apps/<app>/proxy/oapi/topapi/v2/user/get).
// tokend adds the app's access token, retries once when DingTalk rejects it, and the answer is
// DingTalk's, unchanged: code written for DingTalk's endpoints works as it is, without a token and
// from any IP. Any token the request carries (header x-acs-dingtalk-access-token, query
// access_token) is dropped by tokend. tokend's own refusals are application/problem+json answers
// (403 when no proxy rule of this client allows the call, 429 over the shared budget, 503 during an
// IP ban, 413, 502, 504): see the README.
//
// The transport is the Client's HTTPClient's (http.DefaultTransport by default); it never follows
// redirects (http.Client does that, not the transport). Requests to other hosts fail with
// ErrNotDingTalk. It is safe for concurrent use.
func (c *Client) Transport(app string) http.RoundTripper {
	return &proxyTransport{c: c, app: app}
}

// HTTPClient returns an *http.Client whose Transport is Transport(app) and which does not follow
// redirects (a 3xx from DingTalk is returned as it is).
func (c *Client) HTTPClient(app string) *http.Client {
	return &http.Client{
		Transport:     c.Transport(app),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type proxyTransport struct {
	c   *Client
	app string
}

func (t *proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if err := checkApp(t.app); err != nil {
		closeBody()
		return nil, fmt.Errorf("tokend proxy: %w", err)
	}
	var family string
	switch strings.ToLower(req.URL.Hostname()) {
	case APIHost:
		family = "api"
	case OAPIHost:
		family = "oapi"
	default:
		closeBody()
		return nil, fmt.Errorf("tokend proxy: %w", ErrNotDingTalk)
	}
	out := req.Clone(req.Context())
	u := *t.c.base
	u.Path = t.c.base.Path + "/v1/apps/" + t.app + "/proxy/" + family + req.URL.Path
	u.RawPath = ""
	if req.URL.RawPath != "" {
		u.RawPath = t.c.base.EscapedPath() + "/v1/apps/" + t.app + "/proxy/" + family + req.URL.RawPath
	}
	u.RawQuery = req.URL.RawQuery
	out.URL = &u
	out.Host = ""
	out.Header.Set("Authorization", "Bearer "+t.c.key)
	if out.Header.Get("User-Agent") == "" {
		out.Header.Set("User-Agent", t.c.userAgent)
	}
	rt := t.c.hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return rt.RoundTrip(out)
}
