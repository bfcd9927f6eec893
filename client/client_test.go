package client

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAccessTokenIsCached(t *testing.T) {
	tk := startTokend(t)
	c, ct := tk.newClient(t, tk.Key, nil)
	ctx := t.Context()

	before := time.Now()
	first, err := c.AccessToken(ctx, appCRM)
	if err != nil {
		t.Fatalf("AccessToken: %v", err)
	}
	if first.Value == "" {
		t.Fatal("empty token")
	}
	if !first.ExpiresAt.After(before.Add(time.Hour)) || first.ExpiresAt.After(time.Now().Add(2*time.Hour+time.Second)) {
		t.Fatalf("ExpiresAt %v is not about 2h from now", first.ExpiresAt)
	}
	second, err := c.AccessToken(ctx, appCRM)
	if err != nil {
		t.Fatalf("second AccessToken: %v", err)
	}
	if second != first {
		t.Fatalf("second call returned another token (%s, %s)", fp(first.Value), fp(second.Value))
	}
	if n := ct.n.Load(); n != 1 {
		t.Fatalf("two AccessToken calls made %d requests, want 1", n)
	}

	// The ticket has its own cache entry.
	tick, err := c.JSAPITicket(ctx, appCRM)
	if err != nil {
		t.Fatalf("JSAPITicket: %v", err)
	}
	if tick.Value == "" || tick.Value == first.Value {
		t.Fatal("ticket is empty or equals the access token")
	}
	if _, err := c.JSAPITicket(ctx, appCRM); err != nil {
		t.Fatalf("second JSAPITicket: %v", err)
	}
	if n := ct.n.Load(); n != 2 {
		t.Fatalf("after two ticket calls: %d requests, want 2", n)
	}

	// Another app is another entry.
	if _, err := c.AccessToken(ctx, appLegacy); err != nil {
		t.Fatalf("AccessToken(legacy): %v", err)
	}
	if n := ct.n.Load(); n != 3 {
		t.Fatalf("after another app: %d requests, want 3", n)
	}
}

func TestRequestHeaders(t *testing.T) {
	tk := startTokend(t)
	var got http.Header
	var mu sync.Mutex
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		return http.DefaultTransport.RoundTrip(r)
	})
	c, err := New(tk.URL+"/", tk.Key, &Options{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AccessToken(t.Context(), appCRM); err != nil {
		t.Fatalf("AccessToken through a base URL with a trailing slash: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.Get("Authorization") != "Bearer "+tk.Key {
		t.Error("Authorization is not Bearer <key>")
	}
	if v := got.Get("Accept"); v != "application/json" {
		t.Errorf("Accept = %q", v)
	}
	if v := got.Get("User-Agent"); v != "tokend-client/"+Version {
		t.Errorf("User-Agent = %q", v)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCacheExpiry(t *testing.T) {
	tests := []struct {
		name   string
		skew   time.Duration // how far the client's clock is from tokend's
		before time.Duration // RefreshBefore
	}{
		{name: "clock right", before: 0},
		{name: "clock right, refresh 5m before", before: 5 * time.Minute},
		// With the clock an hour behind, expires_at alone would keep the token an hour after its death.
		{name: "clock 1h behind", skew: -time.Hour},
		{name: "clock 1h ahead", skew: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := startTokend(t)
			clock := &testClock{}
			clock.Advance(tt.skew)
			c, ct := tk.newClient(t, tk.Key, &Options{Now: clock.Now, RefreshBefore: tt.before})
			before := tt.before
			if before == 0 {
				before = DefaultRefreshBefore
			}
			ctx := t.Context()

			start := clock.Now()
			tok, err := c.AccessToken(ctx, appCRM)
			if err != nil {
				t.Fatalf("AccessToken: %v", err)
			}
			// The fake grants 7200 s; tokend reports what is left, so the expiry is at most 2 h after
			// the request by the client's clock, whatever the skew.
			lifetime := tok.ExpiresAt.Sub(start)
			want := 2*time.Hour - max(tt.skew, 0)
			if lifetime > want+time.Second || lifetime < want-time.Minute {
				t.Fatalf("ExpiresAt is %v after the request by the client's clock, want about %v", lifetime, want)
			}

			// Just before the refresh point: still cached.
			clock.Advance(tok.ExpiresAt.Sub(clock.Now()) - before - time.Second)
			if _, err := c.AccessToken(ctx, appCRM); err != nil {
				t.Fatalf("AccessToken before the refresh point: %v", err)
			}
			if n := ct.n.Load(); n != 1 {
				t.Fatalf("%d requests before the refresh point, want 1", n)
			}
			// Past it: asked again.
			clock.Advance(2 * time.Second)
			if _, err := c.AccessToken(ctx, appCRM); err != nil {
				t.Fatalf("AccessToken after the refresh point: %v", err)
			}
			if n := ct.n.Load(); n != 2 {
				t.Fatalf("%d requests after the refresh point, want 2", n)
			}
		})
	}
}

func TestConcurrentCallersShareOneRequest(t *testing.T) {
	tk := startTokend(t)
	c, ct := tk.newClient(t, tk.Key, nil)
	const callers = 16
	// Every caller found the cache empty before the one request may go out.
	toks := atOnce(t, c, ct, callers, func() (Token, error) { return c.AccessToken(t.Context(), appCRM) })
	for _, tok := range toks[1:] {
		if tok != toks[0] {
			t.Fatal("callers got different tokens")
		}
	}
	if n := ct.n.Load(); n != 1 {
		t.Fatalf("%d concurrent callers made %d requests, want 1", callers, n)
	}
}

// atOnce runs n callers of call together: ct holds every request until each caller has reached the
// client's flight (found nothing to share yet, or joined one), then lets them go. It returns the
// callers' tokens in the order they came back; a caller's error fails t.
func atOnce(t *testing.T, c *Client, ct *countingTransport, n int, call func() (Token, error)) []Token {
	t.Helper()
	ct.gate = make(chan struct{})
	reached := make(chan struct{}, n)
	c.testHookFlight = func() { reached <- struct{}{} }
	type result struct {
		tok Token
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			tok, err := call()
			results <- result{tok, err}
		}()
	}
	for range n {
		<-reached
	}
	close(ct.gate)
	toks := make([]Token, n)
	for i := range toks {
		r := <-results
		if r.err != nil {
			t.Fatalf("caller: %v", r.err)
		}
		toks[i] = r.tok
	}
	return toks
}

// mustToken returns c's access token of appCRM; an error fails t.
func mustToken(t *testing.T, c *Client) Token {
	t.Helper()
	tok, err := c.AccessToken(t.Context(), appCRM)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestCallerGivingUpDoesNotFailOthers(t *testing.T) {
	tk := startTokend(t)
	c, ct := tk.newClient(t, tk.Key, nil)
	ct.gate = make(chan struct{})
	missed := make(chan struct{}, 2)
	c.testHookFlight = func() { missed <- struct{}{} }

	ctx1, cancel1 := context.WithCancel(t.Context())
	err1 := make(chan error, 1)
	go func() {
		_, err := c.AccessToken(ctx1, appCRM)
		err1 <- err
	}()
	<-missed
	err2 := make(chan error, 1)
	go func() {
		_, err := c.AccessToken(t.Context(), appCRM)
		err2 <- err
	}()
	<-missed
	cancel1() // the caller that started the request gives up
	if err := <-err1; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	close(ct.gate)
	if err := <-err2; err != nil {
		t.Fatalf("the other caller failed with the first one: %v", err)
	}
	if n := ct.n.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestErrors(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	all, _ := tk.newClient(t, tk.Key, nil)
	limited, _ := tk.newClient(t, tk.LimitedKey, nil)
	const wrongKey = "tkd_wrong-key-4be1c0ffee"
	wrong, _ := tk.newClient(t, wrongKey, nil)

	// Tokens this test sees, to check no error carries one.
	crmTok, err := all.AccessToken(ctx, appCRM)
	if err != nil {
		t.Fatal(err)
	}
	crmTick, err := all.JSAPITicket(ctx, appCRM)
	if err != nil {
		t.Fatal(err)
	}
	// The cool-down: the first report of a still-valid token gets it back (DingTalk returns the same
	// token) and starts the cool-down; the second report is refused.
	otherTok, err := all.AccessToken(ctx, appOther)
	if err != nil {
		t.Fatal(err)
	}
	again, err := all.Invalidate(ctx, appOther, otherTok.Value)
	if err != nil {
		t.Fatalf("first Invalidate: %v", err)
	}
	if again.Value != otherTok.Value {
		t.Fatal("reporting a valid token changed it")
	}

	tests := []struct {
		name     string
		do       func() error
		status   int
		code     string
		sentinel error
		check    func(t *testing.T, e *Error)
	}{
		{name: "wrong key", status: 401, code: CodeUnauthenticated, sentinel: ErrUnauthenticated,
			do: func() error { _, err := wrong.AccessToken(ctx, appCRM); return err }},
		{name: "wrong key lists apps", status: 401, code: CodeUnauthenticated, sentinel: ErrUnauthenticated,
			do: func() error { _, err := wrong.Apps(ctx); return err }},
		{name: "other app", status: 403, code: CodeForbidden, sentinel: ErrForbidden,
			do: func() error { _, err := limited.AccessToken(ctx, appOther); return err }},
		{name: "unknown app, limited client", status: 403, code: CodeForbidden, sentinel: ErrForbidden,
			do: func() error { _, err := limited.AccessToken(ctx, "nosuch"); return err }},
		{name: "unknown app", status: 404, code: CodeAppNotFound, sentinel: ErrAppNotFound,
			do: func() error { _, err := all.AccessToken(ctx, "nosuch"); return err }},
		{name: "ticket not enabled", status: 404, code: CodeAppNotFound, sentinel: ErrAppNotFound,
			do: func() error { _, err := all.JSAPITicket(ctx, appLegacy); return err }},
		{name: "signature without ticket", status: 404, code: CodeAppNotFound, sentinel: ErrAppNotFound,
			do: func() error { _, err := all.Signature(ctx, appLegacy, "https://h5.example.com/"); return err }},
		{name: "signature of a relative url", status: 400, code: CodeBadRequest, sentinel: ErrBadRequest,
			do: func() error { _, err := all.Signature(ctx, appCRM, "/index.html"); return err }},
		{name: "invalidate within the cool-down", status: 429, code: CodeRateLimited, sentinel: ErrRateLimited,
			do: func() error { _, err := all.Invalidate(ctx, appOther, otherTok.Value); return err },
			check: func(t *testing.T, e *Error) {
				if e.RetryAfter <= 0 || e.RetryAfter > 30*time.Second {
					t.Errorf("RetryAfter = %v, want (0, 30s]", e.RetryAfter)
				}
			}},
		{name: "credentials rejected", status: 502, code: CodeUpstreamRejected, sentinel: ErrUpstreamRejected,
			do: func() error { _, err := all.AccessToken(ctx, appBroken); return err },
			check: func(t *testing.T, e *Error) {
				if e.UpstreamCode != "invalidClientIdOrSecret" {
					t.Errorf("UpstreamCode = %q, want invalidClientIdOrSecret", e.UpstreamCode)
				}
			}},
		{name: "upstream busy", status: 503, code: CodeUpstreamUnavailable, sentinel: ErrUpstreamUnavailable,
			do: func() error { _, err := all.AccessToken(ctx, appFlaky); return err },
			check: func(t *testing.T, e *Error) {
				if e.RetryAfter <= 0 {
					t.Errorf("RetryAfter = %v, want > 0", e.RetryAfter)
				}
				if e.UpstreamCode != "-1" {
					t.Errorf("UpstreamCode = %q, want -1", e.UpstreamCode)
				}
			}},
	}
	sentinels := []error{ErrBadRequest, ErrUnauthenticated, ErrForbidden, ErrAppNotFound, ErrRateLimited,
		ErrUpstreamRejected, ErrUpstreamUnavailable}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if e.Status != tt.status || e.Code != tt.code {
				t.Fatalf("got %d %q, want %d %q", e.Status, e.Code, tt.status, tt.code)
			}
			if e.Detail == "" {
				t.Error("no detail")
			}
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tt.sentinel) {
					t.Errorf("errors.Is(err, %v) = %v", s, got)
				}
			}
			if tt.check != nil {
				tt.check(t, e)
			}
			assertNoSecrets(t, err, tk.Key, tk.LimitedKey, wrongKey, crmTok.Value, crmTick.Value, otherTok.Value)
		})
	}

	t.Run("local argument checks make no request", func(t *testing.T) {
		c, ct := tk.newClient(t, tk.Key, nil)
		errs := []error{
			func() error { _, err := c.AccessToken(ctx, "../admin"); return err }(),
			func() error { _, err := c.JSAPITicket(ctx, ""); return err }(),
			func() error { _, err := c.Invalidate(ctx, appCRM, ""); return err }(),
			func() error { _, err := c.Signature(ctx, appCRM, ""); return err }(),
			c.Do(ctx, "Bad Name", func(context.Context, string) error { t.Error("call ran"); return nil }),
		}
		for i, err := range errs {
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("%d: err = %v, want ErrBadRequest", i, err)
			}
		}
		if n := ct.n.Load(); n != 0 {
			t.Fatalf("%d requests, want 0", n)
		}
	})

	t.Run("not a tokend route", func(t *testing.T) {
		c, err := New(tk.URL+"/wrong/prefix", tk.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.AccessToken(ctx, appCRM)
		var e *Error
		if !errors.As(err, &e) || e.Status != 404 {
			t.Fatalf("err = %v, want a 404 *Error", err)
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				t.Errorf("a route 404 matches %v", s)
			}
		}
		assertNoSecrets(t, err, tk.Key)
	})
}

// assertNoSecrets fails if err's text (in every format) contains one of values. It names the value
// by position only.
func assertNoSecrets(t *testing.T, err error, values ...string) {
	t.Helper()
	if err == nil {
		return
	}
	texts := []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	var e *Error
	if errors.As(err, &e) {
		texts = append(texts, fmt.Sprintf("%#v", *e))
	}
	for i, v := range values {
		if v == "" {
			t.Fatalf("secret %d is empty: the check would be void", i)
		}
		for _, s := range texts {
			if strings.Contains(s, v) {
				t.Fatalf("an error text contains secret %d", i)
			}
		}
	}
}

func TestInvalidate(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	c, ct := tk.newClient(t, tk.Key, nil)

	old := mustToken(t, c)
	tk.Fake.Revoke(old.Value) // DingTalk now refuses it, as after a secret reset
	fresh, err := c.Invalidate(ctx, appCRM, old.Value)
	if err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if fresh.Value == "" || fresh.Value == old.Value {
		t.Fatal("Invalidate did not return a new token")
	}
	if !fresh.ExpiresAt.After(time.Now().Add(time.Hour)) {
		t.Fatalf("new token expires at %v", fresh.ExpiresAt)
	}
	n := ct.n.Load()
	// The new token is cached.
	got := mustToken(t, c)
	if got.Value != fresh.Value {
		t.Fatal("AccessToken after Invalidate does not return the new token")
	}
	if ct.n.Load() != n {
		t.Fatal("AccessToken after Invalidate made a request")
	}
	// A late report of the old token returns the current one.
	late, err := c.Invalidate(ctx, appCRM, old.Value)
	if err != nil {
		t.Fatalf("late Invalidate: %v", err)
	}
	if late.Value != fresh.Value {
		t.Fatal("a late report of the old token did not return the current one")
	}
	// Another Client sees the new token too.
	other, _ := tk.newClient(t, tk.Key, nil)
	if got, err := other.AccessToken(ctx, appCRM); err != nil || got.Value != fresh.Value {
		t.Fatalf("another client: err %v, same token %v", err, got.Value == fresh.Value)
	}
}

// TestInvalidateDropsCachedToken checks that a value fetched before an invalidation cannot be put
// back in the cache afterwards.
func TestInvalidateDropsCachedToken(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	c, ct := tk.newClient(t, tk.Key, nil)
	old := mustToken(t, c)
	tk.Fake.Revoke(old.Value)
	if _, err := c.Invalidate(ctx, appCRM, old.Value); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	s := c.cache[cacheKey{app: appCRM, kind: kindAccessToken}]
	c.mu.Unlock()
	if s == nil || s.tok.Value == old.Value {
		t.Fatal("the invalidated token is still cached")
	}
	if ct.n.Load() != 2 {
		t.Fatalf("%d requests, want 2", ct.n.Load())
	}
}

func TestDoRetriesOnceOnInvalidToken(t *testing.T) {
	signals := []struct {
		name string
		err  func() error
	}{
		{"legacy 40014", func() error { return LegacyError(40014, "") }},
		{"legacy 42001", func() error { return LegacyError(42001, "") }},
		{"legacy 40001", func() error { return LegacyError(40001, "") }},
		{"topapi 88 sub_code 40014", func() error { return LegacyError(88, "40014") }},
		{"new InvalidAuthentication", func() error { return NewAPIError("InvalidAuthentication") }},
		{"legacy body", func() error {
			return CheckLegacy([]byte(`{"errcode":"40014","errmsg":"不合法的access_token"}`))
		}},
		{"new body", func() error {
			return CheckNew(400, []byte(`{"code":"InvalidAuthentication","message":"不合法的access_token","requestid":"x"}`))
		}},
		{"wrapped", func() error { return fmt.Errorf("list departments: %w", LegacyError(40014, "")) }},
	}
	for _, sig := range signals {
		t.Run(sig.name, func(t *testing.T) {
			// A tokend per case: after an invalidation tokend refuses reports of the new token for 30 s.
			tk := startTokend(t)
			c, ct := tk.newClient(t, tk.Key, nil)
			ctx := t.Context()
			old := mustToken(t, c)
			tk.Fake.Revoke(old.Value)

			var used []string
			err := c.Do(ctx, appCRM, func(_ context.Context, tok string) error {
				used = append(used, tok)
				if tok == old.Value {
					return sig.err()
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if len(used) != 2 {
				t.Fatalf("call ran %d times, want 2", len(used))
			}
			if used[1] == old.Value {
				t.Fatal("the retry used the rejected token")
			}
			// One token fetch, one invalidation.
			if n := ct.n.Load(); n != 2 {
				t.Fatalf("%d requests, want 2", n)
			}
			// The new token is cached for the next Do.
			err = c.Do(ctx, appCRM, func(_ context.Context, tok string) error {
				if tok != used[1] {
					t.Error("next Do did not use the new token")
				}
				return nil
			})
			if err != nil || ct.n.Load() != 2 {
				t.Fatalf("next Do: err %v, %d requests", err, ct.n.Load())
			}
		})
	}
}

func TestDoDoesNotRetryOtherErrors(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	errs := []struct {
		name string
		err  error
	}{
		{"no permission", LegacyError(60011, "")},
		{"88 with another sub_code", LegacyError(88, "60011")},
		{"busy", LegacyError(-1, "")},
		{"new forbidden", NewAPIError("Forbidden.AccessDenied.AccessTokenPermissionDenied")},
		{"plain", errors.New("connection reset")},
		{"text naming the code", errors.New("errcode 40014")},
		{"tokend-looking", &Error{Status: 401, Code: CodeUnauthenticated}},
		{"context", context.DeadlineExceeded},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			c, ct := tk.newClient(t, tk.Key, nil)
			calls := 0
			err := c.Do(ctx, appCRM, func(context.Context, string) error { calls++; return tt.err })
			if err != tt.err {
				t.Fatalf("Do returned %v, want the call's error as is", err)
			}
			if calls != 1 {
				t.Fatalf("call ran %d times, want 1", calls)
			}
			if n := ct.n.Load(); n != 1 {
				t.Fatalf("%d requests, want 1 (no invalidation)", n)
			}
		})
	}
	t.Run("success", func(t *testing.T) {
		c, _ := tk.newClient(t, tk.Key, nil)
		calls := 0
		if err := c.Do(ctx, appCRM, func(context.Context, string) error { calls++; return nil }); err != nil || calls != 1 {
			t.Fatalf("err %v, calls %d", err, calls)
		}
	})
	t.Run("no token", func(t *testing.T) {
		c, _ := tk.newClient(t, tk.Key, nil)
		err := c.Do(ctx, appBroken, func(context.Context, string) error { t.Error("call ran without a token"); return nil })
		if !errors.Is(err, ErrUpstreamRejected) {
			t.Fatalf("err = %v, want ErrUpstreamRejected", err)
		}
	})
}

func TestDoRetriesAtMostOnce(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	c, ct := tk.newClient(t, tk.Key, nil)
	tok := mustToken(t, c)

	// DingTalk keeps refusing (the token is fine for tokend: the caller's problem is elsewhere).
	calls := 0
	err := c.Do(ctx, appCRM, func(context.Context, string) error { calls++; return LegacyError(40014, "") })
	if !IsInvalidToken(err) {
		t.Fatalf("err = %v, want the call's invalid-token error", err)
	}
	if calls != 2 {
		t.Fatalf("call ran %d times, want 2", calls)
	}
	if n := ct.n.Load(); n != 2 {
		t.Fatalf("%d requests, want 2 (token, one invalidation)", n)
	}

	// Again within tokend's cool-down: the report is refused, and the call is not run again.
	calls = 0
	err = c.Do(ctx, appCRM, func(context.Context, string) error { calls++; return LegacyError(40014, "") })
	if !errors.Is(err, ErrRateLimited) || !IsInvalidToken(err) {
		t.Fatalf("err = %v, want both ErrRateLimited and the call's error", err)
	}
	if calls != 1 {
		t.Fatalf("call ran %d times, want 1", calls)
	}
	assertNoSecrets(t, err, tk.Key, tok.Value)
}

func TestSignature(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	c, _ := tk.newClient(t, tk.Key, nil)
	ticket, err := c.JSAPITicket(ctx, appCRM)
	if err != nil {
		t.Fatal(err)
	}
	const page = "https://h5.example.com:8443/app/index.html?corp=1&x=y#/home"
	const signed = "https://h5.example.com:8443/app/index.html?corp=1&x=y" // without the fragment
	before := time.Now().UnixMilli()
	sig, err := c.Signature(ctx, appCRM, page)
	if err != nil {
		t.Fatalf("Signature: %v", err)
	}
	if sig.AgentID != agentID || sig.CorpID != corpID {
		t.Errorf("agentId %q corpId %q", sig.AgentID, sig.CorpID)
	}
	if sig.TimeStamp < before || sig.TimeStamp > time.Now().UnixMilli() {
		t.Errorf("timeStamp %d is not now in milliseconds", sig.TimeStamp)
	}
	sum := sha1.Sum([]byte("jsapi_ticket=" + ticket.Value + "&noncestr=" + sig.NonceStr +
		"&timestamp=" + strconv.FormatInt(sig.TimeStamp, 10) + "&url=" + signed))
	if want := hex.EncodeToString(sum[:]); sig.Signature != want {
		t.Fatalf("signature %s, recomputed from the ticket %s", sig.Signature, want)
	}

	// The JSON is dd.config's.
	b, err := json.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"agentId", "corpId", "timeStamp", "nonceStr", "signature"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no %s: %s", k, b)
		}
	}
	if len(m) != 5 {
		t.Errorf("JSON has %d members, want 5", len(m))
	}

	// Every signature has a fresh nonce.
	sig2, err := c.Signature(ctx, appCRM, page)
	if err != nil {
		t.Fatal(err)
	}
	if sig2.NonceStr == sig.NonceStr {
		t.Error("two signatures share a nonce")
	}
}

func TestApps(t *testing.T) {
	tk := startTokend(t)
	ctx := t.Context()
	tests := []struct {
		name string
		key  string
		want []App
	}{
		{"all", tk.Key, []App{
			{Name: appCRM, Type: "dingtalk", JSAPITicket: true},
			{Name: appLegacy, Type: "dingtalk"},
			{Name: appOther, Type: "dingtalk"},
			{Name: appBroken, Type: "dingtalk"},
			{Name: appFlaky, Type: "dingtalk"},
		}},
		{"limited", tk.LimitedKey, []App{{Name: appCRM, Type: "dingtalk", JSAPITicket: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := tk.newClient(t, tt.key, nil)
			got, err := c.Apps(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Apps = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNotTokend covers answers tokend itself never gives: they must still fail cleanly.
func TestNotTokend(t *testing.T) {
	const key = "tkd_not-for-other-servers-91d3"
	big := strings.Repeat("x", MaxResponseBytes+10)
	var hits sync.Map // paths the redirect target saw
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, r.Header.Get("Authorization"))
		fmt.Fprint(w, `{"app":"crm","access_token":"stolen","expires_at":"2099-01-01T00:00:00Z","expires_in":7200}`)
	}))
	t.Cleanup(target.Close)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(t *testing.T, err error)
	}{
		{"redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/stolen", http.StatusFound)
		}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusFound {
				t.Fatalf("err = %v, want a 302 *Error", err)
			}
			if _, ok := hits.Load("/stolen"); ok {
				t.Fatal("the redirect was followed")
			}
		}},
		{"body over 1 MiB", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, big)
		}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(e.Detail, "larger") {
				t.Fatalf("err = %v, want a too-large *Error", err)
			}
		}},
		{"malformed JSON", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"access_token":`)
		}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || e.Status != 200 {
				t.Fatalf("err = %v, want a 200 *Error", err)
			}
		}},
		{"no token", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"app":"crm","expires_at":"2099-01-01T00:00:00Z","expires_in":7200}`)
		}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
		}},
		{"proxy error page echoing the request", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "<html>bad gateway for %s</html>", r.Header.Get("Authorization"))
		}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || e.Status != 502 || e.Code != "" {
				t.Fatalf("err = %v, want a codeless 502 *Error", err)
			}
			if errors.Is(err, ErrUpstreamRejected) {
				t.Fatal("a proxy's 502 matches ErrUpstreamRejected")
			}
		}},
		{"problem echoing the key", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"status":503,"code":"upstream_unavailable","detail":"key %s"}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		}, func(t *testing.T, err error) {
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrUpstreamUnavailable) || e.RetryAfter != 7*time.Second {
				t.Fatalf("err = %v, want upstream_unavailable with RetryAfter 7s", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			c, err := New(srv.URL, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.AccessToken(t.Context(), appCRM)
			if err == nil {
				t.Fatal("no error")
			}
			if tok.Value != "" {
				t.Fatal("a token came back with the error")
			}
			tt.check(t, err)
			assertNoSecrets(t, err, key)
		})
	}
}

func TestConcurrentInvalidateSharesOneRequest(t *testing.T) {
	tests := []struct {
		name   string
		revoke bool // DingTalk really refuses the token, so tokend replaces it
	}{
		{"token replaced", true},
		// DingTalk hands the same token back: a second report would meet tokend's cool-down.
		{"token unchanged", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := startTokend(t)
			c, ct := tk.newClient(t, tk.Key, nil)
			old := mustToken(t, c)
			if tt.revoke {
				tk.Fake.Revoke(old.Value)
			}
			toks := atOnce(t, c, ct, 8, func() (Token, error) { return c.Invalidate(t.Context(), appCRM, old.Value) })
			first := toks[0]
			for _, tok := range toks[1:] {
				if tok.Value != first.Value {
					t.Fatal("reporters got different tokens")
				}
			}
			if changed := first.Value != old.Value; changed != tt.revoke {
				t.Fatalf("token changed: %v, want %v", changed, tt.revoke)
			}
			if n := ct.n.Load(); n != 2 {
				t.Fatalf("%d requests, want 2 (the token, one report)", n)
			}
		})
	}
}
