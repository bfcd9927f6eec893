// Package dingtalk is the client for the DingTalk endpoints tokend calls: the internal-app and
// organization-authorized access-token endpoints and the jsapi-ticket endpoints, in both API families.
// Every failure is a *Error classified for the broker; no error ever carries a secret or a token.
package dingtalk

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Default API bases.
const (
	DefaultAPIBase  = "https://api.dingtalk.com"
	DefaultOAPIBase = "https://oapi.dingtalk.com"
)

// AccessTokenHeader is where the new API takes the access token. It rejects the token in the query
// or as an Authorization: Bearer header.
const AccessTokenHeader = "x-acs-dingtalk-access-token"

// Options configures a Client. The zero value talks to the real DingTalk.
type Options struct {
	// APIBase is the new API's base URL (scheme://host[:port][/prefix]); default DefaultAPIBase.
	APIBase string
	// OAPIBase is the legacy API's base URL; default DefaultOAPIBase.
	OAPIBase string
	// HTTPClient makes the calls; default a client with no global timeout (callers bound each call
	// with their context's deadline). The client never follows redirects, whichever HTTPClient is
	// given: a redirect would resend the secret elsewhere. A 3xx answer is an "http_3xx" error.
	HTTPClient *http.Client
}

// Client calls DingTalk. It is safe for concurrent use and holds no per-app state.
type Client struct {
	api, oapi *url.URL
	baseErr   error // a malformed APIBase or OAPIBase, reported by every call
	hc        *http.Client
}

// New returns a Client for opts. A malformed base URL is not reported here but by every call, as a
// ClassBadRequest *Error with Code "bad_request" (configuration validation is the place to catch it).
func New(opts Options) *Client {
	c := &Client{}
	var err error
	if c.api, err = parseBase(opts.APIBase, DefaultAPIBase); err != nil {
		c.baseErr = err
	}
	if c.oapi, err = parseBase(opts.OAPIBase, DefaultOAPIBase); err != nil {
		c.baseErr = err
	}
	hc := &http.Client{}
	if opts.HTTPClient != nil {
		cp := *opts.HTTPClient
		hc = &cp
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = hc
	return c
}

func parseBase(base, def string) (*url.URL, error) {
	if base == "" {
		base = def
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, errors.New("invalid base url")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// endpoint returns base + path with query q, built without ever formatting a URL into an error.
func endpoint(base *url.URL, path string, q url.Values) *url.URL {
	u := *base
	u.Path = base.Path + path
	u.RawQuery = q.Encode()
	return &u
}

// AccessToken fetches app's access token:
//
//   - Internal app, API V1 (or empty): POST {APIBase}/v1.0/oauth2/accessToken, JSON {"appKey","appSecret"};
//   - Internal app, API Legacy: GET {OAPIBase}/gettoken?appkey=…&appsecret=…;
//   - Corp app (API ignored): GET {OAPIBase}/gettoken?corpid=…&corpsecret=….
//
// DingTalk returns the same token while it is valid (renewing its expiry), so calling it again is
// harmless. ctx bounds the whole call, body included. Every error is a *Error; its Message is scrubbed
// of app.Secret.
func (c *Client) AccessToken(ctx context.Context, app App) (Grant, error) {
	if c.baseErr != nil {
		return Grant{}, badRequest(c.baseErr.Error())
	}
	secrets := []string{app.Secret}
	switch {
	case app.Type == Corp:
		u := endpoint(c.oapi, "/gettoken", url.Values{"corpid": {app.Key}, "corpsecret": {app.Secret}})
		return c.do(ctx, http.MethodGet, u, nil, nil, legacyParser(tokenField), secrets)
	case app.Type == Internal && app.API == Legacy:
		u := endpoint(c.oapi, "/gettoken", url.Values{"appkey": {app.Key}, "appsecret": {app.Secret}})
		return c.do(ctx, http.MethodGet, u, nil, nil, legacyParser(tokenField), secrets)
	case app.Type == Internal && (app.API == V1 || app.API == ""):
		body, err := json.Marshal(struct {
			AppKey    string `json:"appKey"`
			AppSecret string `json:"appSecret"`
		}{app.Key, app.Secret})
		if err != nil {
			return Grant{}, badRequest("encode request body")
		}
		u := endpoint(c.api, "/v1.0/oauth2/accessToken", nil)
		h := http.Header{"Content-Type": {"application/json"}}
		return c.do(ctx, http.MethodPost, u, h, body, newParser(tokenField), secrets)
	case app.Type != Internal:
		return Grant{}, badRequest("unknown app type")
	default:
		return Grant{}, badRequest("unknown api family")
	}
}

// JSAPITicket fetches the jsapi ticket of the app that accessToken belongs to:
//
//   - V1 (or empty): POST {APIBase}/v1.0/oauth2/jsapiTickets with the token in header
//     x-acs-dingtalk-access-token and no body;
//   - Legacy: GET {OAPIBase}/get_jsapi_ticket?access_token=….
//
// DingTalk returns the same ticket while it is valid and extends it, but a ticket dies 24 h after its
// creation whatever ExpiresIn says: the caller must cap it. An invalid access token gives a
// ClassInvalidToken *Error. Every error is a *Error; its Message is scrubbed of accessToken.
func (c *Client) JSAPITicket(ctx context.Context, api API, accessToken string) (Grant, error) {
	if c.baseErr != nil {
		return Grant{}, badRequest(c.baseErr.Error())
	}
	secrets := []string{accessToken}
	switch api {
	case V1, "":
		u := endpoint(c.api, "/v1.0/oauth2/jsapiTickets", nil)
		h := http.Header{AccessTokenHeader: {accessToken}}
		return c.do(ctx, http.MethodPost, u, h, nil, newParser(ticketField), secrets)
	case Legacy:
		u := endpoint(c.oapi, "/get_jsapi_ticket", url.Values{"access_token": {accessToken}})
		return c.do(ctx, http.MethodGet, u, nil, nil, legacyParser(ticketField), secrets)
	default:
		return Grant{}, badRequest("unknown api family")
	}
}

type parser func(status int, contentType string, body []byte, truncated bool) (Grant, *Error)

func legacyParser(f field) parser {
	return func(status int, ct string, body []byte, trunc bool) (Grant, *Error) {
		return parseLegacy(status, ct, body, trunc, f)
	}
}

func newParser(f field) parser {
	return func(status int, ct string, body []byte, trunc bool) (Grant, *Error) {
		return parseNew(status, ct, body, trunc, f)
	}
}

// do makes one call (exchange) and interprets the answer. secrets are scrubbed from every message.
func (c *Client) do(ctx context.Context, method string, u *url.URL, h http.Header, body []byte, parse parser, secrets []string) (Grant, error) {
	a, e := c.exchange(ctx, method, u, h, body, secrets)
	if e != nil {
		return Grant{}, e
	}
	g, e := parse(a.status, a.contentType, a.body, a.truncated)
	if e != nil {
		e.Message = scrub(e.Message, secrets)
		return Grant{}, e
	}
	return g, nil
}

// transportError turns a failed exchange into a *Error without keeping err itself: a *url.Error
// holds the full URL, query and secret included.
func transportError(ctx context.Context, op string, err error, secrets []string) *Error {
	e := &Error{Family: FamilyTransport, Code: CodeNetwork, Class: ClassUnavailable}
	var nerr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		e.Code = CodeTimeout
		e.cause = context.DeadlineExceeded
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		e.cause = context.Canceled
	case errors.As(err, &nerr) && nerr.Timeout():
		e.Code = CodeTimeout
	}
	for {
		var uerr *url.Error
		if !errors.As(err, &uerr) {
			break
		}
		err = uerr.Err
	}
	e.Message = scrub(op+": "+err.Error(), secrets)
	return e
}

func badRequest(msg string) *Error {
	return &Error{Family: FamilyTransport, Code: CodeBadRequest, Message: msg, Class: ClassBadRequest}
}

// redacted replaces a secret found in a message.
const redacted = "[redacted]"

// secretForms returns s as it may appear in an echoed message: raw, URL-encoded, JSON-escaped.
func secretForms(s string) []string {
	forms := []string{s, url.QueryEscape(s), url.PathEscape(s)}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for _, html := range []bool{true, false} {
		b.Reset()
		enc.SetEscapeHTML(html)
		if enc.Encode(s) == nil {
			forms = append(forms, strings.TrimSuffix(strings.TrimSpace(b.String()), `"`)[1:])
		}
	}
	return forms
}

// scrub removes every secret, in any of its secretForms, from msg, makes it valid UTF-8 and bounds its length.
func scrub(msg string, secrets []string) string {
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, form := range secretForms(s) {
			msg = strings.ReplaceAll(msg, form, redacted)
		}
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > maxMessageBytes {
		cut := maxMessageBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}
