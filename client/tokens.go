package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/sync/singleflight"
)

// Token is an access token or a jsapi ticket. Value is a secret: do not log it.
type Token struct {
	Value string
	// ExpiresAt is when the value expires by this process's clock: the earlier of tokend's expires_at
	// and the local time of the request plus tokend's expires_in, so a skewed clock cannot make a dead
	// value look alive.
	ExpiresAt time.Time
}

// Signature is what dd.config needs besides jsApiList. Its JSON encoding has dd.config's member names,
// so it can be handed to a front-end as is.
type Signature struct {
	AgentID   string `json:"agentId"`
	CorpID    string `json:"corpId"`
	TimeStamp int64  `json:"timeStamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// App is an app the client may use, as GET /v1/apps lists it.
type App struct {
	Name string `json:"name"`
	// Type is "dingtalk" (internal app) or "dingtalk_corp" (organization-authorized app).
	Type string `json:"type"`
	// JSAPITicket says whether the app keeps a jsapi ticket (so JSAPITicket and Signature work).
	JSAPITicket bool `json:"jsapi_ticket"`
}

// AccessToken returns a valid access token of app. A value cached by an earlier call is returned
// without a request while more than RefreshBefore of it is left; otherwise tokend is asked, and
// concurrent callers for the same app share that one request. It returns ctx's error if ctx ends
// first, an *Error for an answer other than 200 (see the sentinels), or a transport error.
func (c *Client) AccessToken(ctx context.Context, app string) (Token, error) {
	t, err := c.credential(ctx, cacheKey{app: app, kind: kindAccessToken})
	if err != nil {
		return Token{}, fmt.Errorf("tokend: access_token of %s: %w", app, err)
	}
	return t, nil
}

// JSAPITicket returns a valid jsapi ticket of app, cached and shared like AccessToken. An app that
// keeps no ticket gives an *Error matching ErrAppNotFound.
func (c *Client) JSAPITicket(ctx context.Context, app string) (Token, error) {
	t, err := c.credential(ctx, cacheKey{app: app, kind: kindTicket})
	if err != nil {
		return Token{}, fmt.Errorf("tokend: jsapi_ticket of %s: %w", app, err)
	}
	return t, nil
}

// credential returns the cached value of k or fetches it in the one shared flight for k.
func (c *Client) credential(ctx context.Context, k cacheKey) (Token, error) {
	if err := checkApp(k.app); err != nil {
		return Token{}, err
	}
	if t, ok := c.cached(k); ok {
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	if c.testHookFlight != nil {
		c.testHookFlight()
	}
	ch := c.flights.DoChan(string(k.kind)+"/"+k.app, func() (any, error) {
		// A flight that ended between this caller's cache miss and now has filled the cache.
		if t, ok := c.cached(k); ok {
			return t, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		return c.fetch(fctx, k)
	})
	return wait(ctx, ch)
}

// fetch asks tokend for k's credential and caches it, unless Invalidate replaced or dropped the cached
// value meanwhile.
func (c *Client) fetch(ctx context.Context, k cacheKey) (Token, error) {
	c.mu.Lock()
	var epoch uint64
	if s := c.cache[k]; s != nil {
		epoch = s.epoch
	}
	c.mu.Unlock()
	start := c.now()
	var resp credentialResponse
	if err := c.call(ctx, http.MethodGet, c.endpoint("v1", "apps", k.app, string(k.kind)), nil, &resp); err != nil {
		return Token{}, err
	}
	t, err := resp.token(k.kind, start)
	if err != nil {
		return Token{}, err
	}
	c.mu.Lock()
	if s := c.slot(k); s.epoch == epoch {
		s.tok, s.until = t, c.useUntil(t)
	}
	c.mu.Unlock()
	return t, nil
}

// Invalidate reports that DingTalk rejected token, an access token of app (errcode 40014, 42001,
// 40001, 88/40014 or InvalidAuthentication), and returns the access token to use now. It drops token
// from the cache and caches the returned one. tokend refreshes the token only if the reported one is
// still current; a report of an older token returns the current one. Concurrent reports of the same
// token from this Client share one request.
//
// DingTalk may hand back the same token (it was valid after all); reporting it again within tokend's
// cool-down gives an *Error matching ErrRateLimited: the problem is then elsewhere (permissions, wrong
// app, missing header). Other errors are those of AccessToken. Report only tokens DingTalk rejected
// as invalid: each report may cost a call to DingTalk.
func (c *Client) Invalidate(ctx context.Context, app, token string) (Token, error) {
	t, err := c.invalidate(ctx, app, token)
	if err != nil {
		return Token{}, fmt.Errorf("tokend: invalidate access_token of %s: %w", app, err)
	}
	return t, nil
}

func (c *Client) invalidate(ctx context.Context, app, token string) (Token, error) {
	if err := checkApp(app); err != nil {
		return Token{}, err
	}
	if token == "" {
		return Token{}, fmt.Errorf("token is empty: %w", ErrBadRequest)
	}
	k := cacheKey{app: app, kind: kindAccessToken}
	// The flight's name and the cache keep a hash of the reported token, not the token itself.
	sum := sha256.Sum256([]byte(token))
	c.mu.Lock()
	var epoch uint64
	if s := c.cache[k]; s != nil {
		if s.tok.Value == token {
			s.tok, s.until = Token{}, time.Time{}
			s.epoch++
		}
		epoch = s.epoch
	}
	c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	if c.testHookFlight != nil {
		c.testHookFlight()
	}
	ch := c.flights.DoChan("invalidate/"+app+"/"+hex.EncodeToString(sum[:]), func() (any, error) {
		// A report that ended since this one began answered it already if it was of the same token,
		// or if it replaced the token: sending this one too would only meet tokend's cool-down.
		c.mu.Lock()
		if s := c.cache[k]; s != nil && s.epoch > epoch && c.now().Before(s.until) &&
			(s.reported == sum || s.tok.Value != token) {
			t := s.tok
			c.mu.Unlock()
			return t, nil
		}
		c.mu.Unlock()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		start := c.now()
		var resp credentialResponse
		u := c.endpoint("v1", "apps", app, "access_token", "invalidate")
		if err := c.call(fctx, http.MethodPost, u, invalidateRequest{AccessToken: token}, &resp, token); err != nil {
			return Token{}, err
		}
		t, err := resp.token(kindAccessToken, start)
		if err != nil {
			return Token{}, err
		}
		c.mu.Lock()
		s := c.slot(k)
		s.tok, s.until, s.reported = t, c.useUntil(t), sum
		s.epoch++
		c.mu.Unlock()
		return t, nil
	})
	return wait(ctx, ch)
}

type invalidateRequest struct {
	AccessToken string `json:"access_token"`
}

// Signature returns the dd.config signature of the page at pageURL (the full page URL; tokend drops
// the fragment) for app, with a fresh nonce and the current time in milliseconds. It is not cached.
// An app that keeps no ticket gives an *Error matching ErrAppNotFound, a malformed pageURL one
// matching ErrBadRequest; other errors are those of AccessToken.
func (c *Client) Signature(ctx context.Context, app, pageURL string) (Signature, error) {
	s, err := c.signature(ctx, app, pageURL)
	if err != nil {
		return Signature{}, fmt.Errorf("tokend: jsapi_signature of %s: %w", app, err)
	}
	return s, nil
}

func (c *Client) signature(ctx context.Context, app, pageURL string) (Signature, error) {
	if err := checkApp(app); err != nil {
		return Signature{}, err
	}
	if pageURL == "" {
		return Signature{}, fmt.Errorf("page url is empty: %w", ErrBadRequest)
	}
	var s Signature
	req := struct {
		URL string `json:"url"`
	}{pageURL}
	if err := c.call(ctx, http.MethodPost, c.endpoint("v1", "apps", app, "jsapi_signature"), req, &s); err != nil {
		return Signature{}, err
	}
	if s.Signature == "" || s.NonceStr == "" || s.TimeStamp == 0 {
		return Signature{}, &Error{Status: http.StatusOK, Detail: "malformed response: incomplete signature"}
	}
	return s, nil
}

// Apps returns the apps this client's key may use, in tokend's configuration order. It is not cached.
func (c *Client) Apps(ctx context.Context) ([]App, error) {
	var resp struct {
		Apps []App `json:"apps"`
	}
	if err := c.call(ctx, http.MethodGet, c.endpoint("v1", "apps"), nil, &resp); err != nil {
		return nil, fmt.Errorf("tokend: apps: %w", err)
	}
	if resp.Apps == nil {
		resp.Apps = []App{}
	}
	return resp.Apps, nil
}

// credentialResponse is the 200 answer of the access_token, jsapi_ticket and invalidate routes.
type credentialResponse struct {
	AccessToken string    `json:"access_token"`
	Ticket      string    `json:"ticket"`
	ExpiresAt   time.Time `json:"expires_at"`
	ExpiresIn   *int64    `json:"expires_in"`
}

// token returns the credential of the answer to a request sent at start (local clock). Its expiry is
// the earlier of expires_at and start + expires_in: with the local clock behind tokend's, expires_at
// alone would keep a dead token; start (not the time of the answer) errs on the early side.
func (r *credentialResponse) token(k kind, start time.Time) (Token, error) {
	v := r.AccessToken
	if k == kindTicket {
		v = r.Ticket
	}
	if v == "" || r.ExpiresAt.IsZero() {
		return Token{}, &Error{Status: http.StatusOK, Detail: "malformed response: no " + string(k) + " or expires_at"}
	}
	exp := r.ExpiresAt
	if r.ExpiresIn != nil {
		if byIn := start.Add(time.Duration(max(*r.ExpiresIn, 0)) * time.Second); byIn.Before(exp) {
			exp = byIn
		}
	}
	return Token{Value: v, ExpiresAt: exp}, nil
}

// useUntil is when a cached t stops being used.
func (c *Client) useUntil(t Token) time.Time { return t.ExpiresAt.Add(-c.refreshBefore) }

// cached returns k's cached value if it is still to be used. It takes c.mu.
func (c *Client) cached(k cacheKey) (Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.cache[k]
	if s == nil || s.tok.Value == "" || !c.now().Before(s.until) {
		return Token{}, false
	}
	return s.tok, true
}

// slot returns k's cache slot, creating it. c.mu must be held. Slots are created only for a value
// tokend handed out, so names that never worked take no memory.
func (c *Client) slot(k cacheKey) *slot {
	s := c.cache[k]
	if s == nil {
		s = &slot{}
		c.cache[k] = s
	}
	return s
}

// wait returns the flight's result, or ctx's error if ctx ends first (the flight goes on for the
// other callers).
func wait(ctx context.Context, ch <-chan singleflight.Result) (Token, error) {
	select {
	case res := <-ch:
		if res.Err != nil {
			return Token{}, res.Err
		}
		return res.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}
