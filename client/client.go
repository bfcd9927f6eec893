package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Version is this package's version, sent in the User-Agent header as "tokend-client/<Version>".
const Version = "0.1.0"

// DefaultRefreshBefore is how long before a credential's expiry the cached value stops being used
// when Options.RefreshBefore is zero.
const DefaultRefreshBefore = 60 * time.Second

// MaxResponseBytes is the largest response body the client reads from tokend. A larger answer is an
// error (tokend's answers are a few hundred bytes).
const MaxResponseBytes = 1 << 20

// flightTimeout bounds one request to tokend made on behalf of several callers. The request runs
// detached from the first caller's context (so that caller giving up does not fail the others); each
// caller still waits no longer than its own context allows.
const flightTimeout = 30 * time.Second

// Options configures a Client. The zero value (or nil) is fine.
type Options struct {
	// HTTPClient makes the requests to tokend. Default: a new http.Client with no overall timeout
	// (every call is bounded by its context). The client never follows redirects, whichever HTTPClient
	// is given: a redirect would send the key elsewhere; a 3xx answer is an *Error.
	HTTPClient *http.Client
	// RefreshBefore: a cached access token or ticket is used until this long before it expires, then
	// fetched again from tokend. Zero means DefaultRefreshBefore; negative is an error.
	RefreshBefore time.Duration
	// Now is the clock the cache follows. Default time.Now.
	Now func() time.Time
}

// Client talks to one tokend. It caches access tokens and jsapi tickets in memory per app, and
// concurrent callers needing the same uncached credential share one request. A Client is safe for
// concurrent use; create one per tokend and key, and keep it for the life of the process.
type Client struct {
	base          *url.URL
	key           string
	hc            *http.Client
	refreshBefore time.Duration
	now           func() time.Time
	userAgent     string

	mu    sync.Mutex
	cache map[cacheKey]*slot

	flights singleflight.Group

	// testHookFlight, when set, is called by a caller just before it starts or joins a shared
	// request (after finding no usable cached value). Tests use it to know every caller got that far.
	testHookFlight func()
}

type kind string

const (
	kindAccessToken kind = "access_token"
	kindTicket      kind = "jsapi_ticket"
)

type cacheKey struct {
	app  string
	kind kind
}

// slot is the cache state of one credential. epoch grows whenever the cached value is replaced or
// dropped by Invalidate, so a fetch that started before cannot put an older value back.
type slot struct {
	tok      Token
	until    time.Time // use tok while now is before until
	epoch    uint64
	reported [32]byte // SHA-256 of the token whose report put tok here, if a report did
}

// New returns a Client for the tokend at baseURL (an absolute http or https URL, optionally with a
// path prefix, such as "http://127.0.0.1:8080" or "https://gw.example.com/tokend"), authenticating
// with key. opts may be nil. New makes no request. It fails for a malformed baseURL, an empty key or a
// negative RefreshBefore; the error never contains key.
func New(baseURL, key string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		// url.Error repeats the URL, which might carry userinfo: keep only that it did not parse.
		return nil, errors.New("tokend client: base URL does not parse")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("tokend client: base URL must be an absolute http or https URL")
	case u.Host == "" || u.Opaque != "":
		return nil, errors.New("tokend client: base URL has no host")
	case u.User != nil:
		return nil, errors.New("tokend client: base URL must not carry user information")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("tokend client: base URL must not have a query or fragment")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if key == "" {
		return nil, errors.New("tokend client: key is required")
	}
	if strings.ContainsAny(key, "\r\n") {
		return nil, errors.New("tokend client: key contains a line break")
	}
	switch {
	case o.RefreshBefore < 0:
		return nil, errors.New("tokend client: RefreshBefore must not be negative")
	case o.RefreshBefore == 0:
		o.RefreshBefore = DefaultRefreshBefore
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	hc := &http.Client{}
	if o.HTTPClient != nil {
		cp := *o.HTTPClient
		hc = &cp
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{
		base:          u,
		key:           key,
		hc:            hc,
		refreshBefore: o.RefreshBefore,
		now:           o.Now,
		userAgent:     "tokend-client/" + Version,
		cache:         map[cacheKey]*slot{},
	}, nil
}

// endpoint returns the URL of base + "/v1/apps/<app>/<rest...>". app has been checked by checkApp,
// so it needs no escaping.
func (c *Client) endpoint(elems ...string) string {
	u := *c.base
	u.Path = c.base.Path + "/" + strings.Join(elems, "/")
	return u.String()
}

// checkApp rejects names that cannot be an app (the contract's [a-z0-9][a-z0-9_-]{0,63}) before they
// reach a URL path.
func checkApp(app string) error {
	if app == "" || len(app) > 64 {
		return fmt.Errorf("app name must be 1 to 64 characters: %w", ErrBadRequest)
	}
	for i := 0; i < len(app); i++ {
		ch := app[i]
		ok := ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || i > 0 && (ch == '_' || ch == '-')
		if !ok {
			return fmt.Errorf("app name must match [a-z0-9][a-z0-9_-]*: %w", ErrBadRequest)
		}
	}
	return nil
}

// call sends one request to tokend and decodes a 200 answer into out. Any other answer becomes an
// *Error. redact lists values (besides the key) that must not appear in an error.
func (c *Client) call(ctx context.Context, method, u string, in, out any, redact ...string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error names the method and URL (base, app and path: no key, no token) and the cause.
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if len(data) > MaxResponseBytes {
		return &Error{Status: resp.StatusCode, Detail: fmt.Sprintf("response larger than %d bytes", MaxResponseBytes)}
	}
	if resp.StatusCode != http.StatusOK {
		return c.problem(resp, data, redact)
	}
	if err := json.Unmarshal(data, out); err != nil {
		// json's messages name types and offsets, never the (possibly secret) values.
		return &Error{Status: resp.StatusCode, Detail: "malformed response: " + err.Error()}
	}
	return nil
}

// problem builds the *Error of a non-200 answer: from its problem document when it has one, from
// the status alone otherwise (a proxy's error page is not read into the error).
func (c *Client) problem(resp *http.Response, data []byte, redact []string) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: c.retryAfter(resp.Header.Get("Retry-After"))}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var p struct {
		Code         string `json:"code"`
		Detail       string `json:"detail"`
		UpstreamCode string `json:"upstream_code"`
	}
	if (ct == "application/problem+json" || ct == "application/json") && json.Unmarshal(data, &p) == nil {
		e.Code = p.Code
		e.Detail = p.Detail
		e.UpstreamCode = p.UpstreamCode
	}
	if e.Detail == "" {
		e.Detail = http.StatusText(resp.StatusCode)
	}
	// tokend never echoes a key or a token, but whatever answers at baseURL might: make sure.
	e.Detail = clip(redactAll(e.Detail, c.key, redact), 512)
	e.Code = clip(redactAll(e.Code, c.key, redact), 64)
	e.UpstreamCode = clip(redactAll(e.UpstreamCode, c.key, redact), 128)
	return e
}

// retryAfter parses a Retry-After header: delay-seconds, or an HTTP date.
func (c *Client) retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(c.now()); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

func redactAll(s, key string, more []string) string {
	s = strings.ReplaceAll(s, key, "[redacted]")
	for _, v := range more {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
