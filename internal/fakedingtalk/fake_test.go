package fakedingtalk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/token"
)

var t0 = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

func newClock() *fakeclock.Clock { return fakeclock.New(t0) }

// env is a fake served over HTTP with a client pointed at it.
type env struct {
	fake   *Server
	client *dingtalk.Client
	clock  *fakeclock.Clock
	url    string
}

func setup(t *testing.T, opts Options) *env {
	t.Helper()
	clk := newClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	f := New(opts)
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	t.Cleanup(f.Close) // runs before ts.Close: releases held requests
	return &env{fake: f, client: dingtalk.New(dingtalk.Options{APIBase: ts.URL, OAPIBase: ts.URL}), clock: clk, url: ts.URL}
}

// flavour is one way of fetching an access token.
type flavour struct {
	name      string
	typ       dingtalk.AppType
	api       dingtalk.API
	badCode   string // DingTalk's wrong-credentials code for this flavour
	ticketAPI dingtalk.API
}

var flavours = []flavour{
	{"v1", dingtalk.Internal, dingtalk.V1, "invalidClientIdOrSecret", dingtalk.V1},
	{"legacy", dingtalk.Internal, dingtalk.Legacy, "40096", dingtalk.Legacy},
	{"corp", dingtalk.Corp, dingtalk.Legacy, "40089", dingtalk.Legacy},
}

func (fl flavour) app(key, secret string) dingtalk.App {
	return dingtalk.App{Type: fl.typ, API: fl.api, Key: key, Secret: secret}
}

func (e *env) register(fl flavour, key, secret string) {
	if fl.typ == dingtalk.Corp {
		e.fake.AddCorp(key, secret)
	} else {
		e.fake.AddApp(key, secret)
	}
}

func (e *env) token(t *testing.T, app dingtalk.App) dingtalk.Grant {
	t.Helper()
	g, err := e.client.AccessToken(t.Context(), app)
	if err != nil {
		t.Fatalf("AccessToken(%s): %v", app.Key, err)
	}
	return g
}

func (e *env) ticket(t *testing.T, api dingtalk.API, tok string) dingtalk.Grant {
	t.Helper()
	g, err := e.client.JSAPITicket(t.Context(), api, tok)
	if err != nil {
		t.Fatalf("JSAPITicket(%s): %v", api, err)
	}
	return g
}

// dtErr asserts err is a *dingtalk.Error with code and class.
func dtErr(t *testing.T, err error, code string, class dingtalk.Class) *dingtalk.Error {
	t.Helper()
	var de *dingtalk.Error
	if !errors.As(err, &de) {
		t.Fatalf("got %v, want *dingtalk.Error %s", err, code)
	}
	if de.Code != code || de.Class != class {
		t.Fatalf("got %v (class %d), want code %s class %d", err, de.Class, code, class)
	}
	return de
}

var tokenRE = regexp.MustCompile(`^fake-at-[0-9a-f]{32}$`)
var ticketRE = regexp.MustCompile(`^fake-jt-[0-9a-f]{32}$`)

func TestTokenLifecycle(t *testing.T) {
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			e := setup(t, Options{})
			e.register(fl, "dingapp", "sec-1")
			app := fl.app("dingapp", "sec-1")

			g1 := e.token(t, app)
			if !tokenRE.MatchString(g1.Value) || g1.ExpiresIn != 7200*time.Second {
				t.Fatalf("first grant %q %v", g1.Value, g1.ExpiresIn)
			}
			e.clock.Advance(time.Hour)
			if g2 := e.token(t, app); g2.Value != g1.Value || g2.ExpiresIn != 7200*time.Second {
				t.Fatalf("fetch while valid gave %q %v, want the same token", g2.Value, g2.ExpiresIn)
			}
			iss := e.fake.Issued()
			if len(iss) != 1 || !iss[0].ExpiresAt.Equal(t0.Add(3*time.Hour)) || !iss[0].IssuedAt.Equal(t0) ||
				iss[0].App != "dingapp" || iss[0].Kind != token.AccessToken {
				t.Fatalf("issued after renewal: %+v", iss)
			}
			// Renewed: valid past its first expiry, until the latest one.
			for _, c := range []struct {
				at   time.Time
				want bool
			}{
				{t0.Add(-time.Second), false},
				{t0, true},
				{t0.Add(2*time.Hour + 30*time.Minute), true},
				{t0.Add(3*time.Hour - time.Nanosecond), true},
				{t0.Add(3 * time.Hour), false},
			} {
				if got := e.fake.Valid(token.AccessToken, g1.Value, c.at); got != c.want {
					t.Errorf("Valid(at %v) = %v, want %v", c.at.Sub(t0), got, c.want)
				}
			}
			if e.fake.Valid(token.JSAPITicket, g1.Value, t0) {
				t.Error("a token is valid as a ticket")
			}
			e.clock.Advance(2 * time.Hour) // now t0+3h: expired
			g3 := e.token(t, app)
			if g3.Value == g1.Value || !tokenRE.MatchString(g3.Value) {
				t.Fatalf("fetch after expiry gave %q, want a new token", g3.Value)
			}
			if n := len(e.fake.Issued()); n != 2 {
				t.Fatalf("%d values issued, want 2", n)
			}
			if !e.fake.Valid(token.AccessToken, g3.Value, e.clock.Now()) || e.fake.Valid(token.AccessToken, g1.Value, e.clock.Now()) {
				t.Fatal("Valid disagrees with the rotation")
			}
		})
	}
}

func TestWrongCredentials(t *testing.T) {
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			e := setup(t, Options{})
			e.register(fl, "dingapp", "right")
			for _, app := range []dingtalk.App{fl.app("dingapp", "wrong"), fl.app("dingapp", ""), fl.app("nosuchapp", "right")} {
				_, err := e.client.AccessToken(t.Context(), app)
				dtErr(t, err, fl.badCode, dingtalk.ClassCredentials)
			}
			if len(e.fake.Issued()) != 0 {
				t.Fatal("a value was issued on bad credentials")
			}
		})
	}
	t.Run("wrong kind of app", func(t *testing.T) {
		e := setup(t, Options{})
		e.fake.AddApp("internal", "s")
		e.fake.AddCorp("corp", "s")
		_, err := e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Corp, Key: "internal", Secret: "s"})
		dtErr(t, err, "40089", dingtalk.ClassCredentials)
		_, err = e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Internal, API: dingtalk.Legacy, Key: "corp", Secret: "s"})
		dtErr(t, err, "40096", dingtalk.ClassCredentials)
		_, err = e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "corp", Secret: "s"})
		dtErr(t, err, "invalidClientIdOrSecret", dingtalk.ClassCredentials)
	})
	t.Run("secret update", func(t *testing.T) {
		e := setup(t, Options{})
		e.fake.AddApp("k", "old")
		e.fake.AddApp("k", "new")
		_, err := e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "old"})
		dtErr(t, err, "invalidClientIdOrSecret", dingtalk.ClassCredentials)
		e.token(t, dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "new"})
	})
}

func TestRevoke(t *testing.T) {
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			e := setup(t, Options{})
			e.register(fl, "dingapp", "s")
			app := fl.app("dingapp", "s")
			old := e.token(t, app)
			tk := e.ticket(t, fl.ticketAPI, old.Value)

			e.clock.Advance(time.Minute)
			if !e.fake.Revoke(old.Value) {
				t.Fatal("Revoke of a current token reported false")
			}
			if e.fake.Revoke(old.Value) || e.fake.Revoke("fake-at-nosuch") {
				t.Fatal("Revoke of a revoked or unknown value reported true")
			}
			revokedAt := e.clock.Now()
			e.clock.Advance(time.Second)
			for _, api := range []dingtalk.API{dingtalk.V1, dingtalk.Legacy} {
				_, err := e.client.JSAPITicket(t.Context(), api, old.Value)
				code := "InvalidAuthentication"
				if api == dingtalk.Legacy {
					code = "40014"
				}
				dtErr(t, err, code, dingtalk.ClassInvalidToken)
			}
			if !e.fake.Valid(token.AccessToken, old.Value, revokedAt.Add(-time.Nanosecond)) || e.fake.Valid(token.AccessToken, old.Value, revokedAt) {
				t.Fatal("Valid ignores the revocation time")
			}
			fresh := e.token(t, app)
			if fresh.Value == old.Value {
				t.Fatal("fetch after revocation returned the revoked token")
			}
			// The ticket outlives the token that fetched it.
			if got := e.ticket(t, fl.ticketAPI, fresh.Value); got.Value != tk.Value {
				t.Fatal("ticket changed when its token was revoked")
			}
			e.fake.Revoke(tk.Value)
			if got := e.ticket(t, fl.ticketAPI, fresh.Value); got.Value == tk.Value || !ticketRE.MatchString(got.Value) {
				t.Fatalf("ticket after revocation %q, want a new one", got.Value)
			}
			var revoked int
			for _, i := range e.fake.Issued() {
				if !i.RevokedAt.IsZero() {
					revoked++
				}
			}
			if revoked != 2 {
				t.Fatalf("%d values show as revoked, want 2", revoked)
			}
		})
	}
}

func TestTicketLifecycle(t *testing.T) {
	for _, api := range []dingtalk.API{dingtalk.V1, dingtalk.Legacy} {
		t.Run(string(api), func(t *testing.T) {
			e := setup(t, Options{})
			e.fake.AddApp("k", "s")
			// A token from the other family works too.
			other := dingtalk.Legacy
			if api == dingtalk.Legacy {
				other = dingtalk.V1
			}
			app := dingtalk.App{Type: dingtalk.Internal, API: other, Key: "k", Secret: "s"}

			first := e.ticket(t, api, e.token(t, app).Value)
			if !ticketRE.MatchString(first.Value) || first.ExpiresIn != 7200*time.Second {
				t.Fatalf("first ticket %q %v", first.Value, first.ExpiresIn)
			}
			// Fetched every hour, it is the same ticket, says 7200 s every time, and dies at 24 h.
			for h := 1; h < 24; h++ {
				e.clock.Advance(time.Hour)
				g := e.ticket(t, api, e.token(t, app).Value)
				if g.Value != first.Value || g.ExpiresIn != 7200*time.Second {
					t.Fatalf("hour %d: ticket %q %v, want the same ticket saying 7200 s", h, g.Value, g.ExpiresIn)
				}
				want := t0.Add(min(time.Duration(h+2)*time.Hour, 24*time.Hour))
				if got := ticketIssue(t, e.fake, first.Value).ExpiresAt; !got.Equal(want) {
					t.Fatalf("hour %d: real expiry %v, want %v", h, got.Sub(t0), want.Sub(t0))
				}
			}
			if !e.fake.Valid(token.JSAPITicket, first.Value, t0.Add(24*time.Hour-time.Nanosecond)) ||
				e.fake.Valid(token.JSAPITicket, first.Value, t0.Add(24*time.Hour)) {
				t.Fatal("ticket not dead exactly 24 h after creation")
			}
			e.clock.Advance(time.Hour) // t0+24h
			second := e.ticket(t, api, e.token(t, app).Value)
			if second.Value == first.Value {
				t.Fatal("ticket lived past 24 h")
			}
			// Not fetched for longer than its TTL: a new one.
			e.clock.Advance(2 * time.Hour)
			if third := e.ticket(t, api, e.token(t, app).Value); third.Value == second.Value {
				t.Fatal("expired ticket returned again")
			}
		})
	}
	t.Run("short max age", func(t *testing.T) {
		e := setup(t, Options{TicketTTL: time.Hour, TicketMaxAge: 30 * time.Minute})
		e.fake.AddApp("k", "s")
		g := e.ticket(t, dingtalk.V1, e.token(t, dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}).Value)
		if g.ExpiresIn != time.Hour {
			t.Fatalf("answer says %v, want the TTL whatever the max age", g.ExpiresIn)
		}
		if got := ticketIssue(t, e.fake, g.Value).ExpiresAt; !got.Equal(t0.Add(30 * time.Minute)) {
			t.Fatalf("real expiry %v, want 30m", got.Sub(t0))
		}
	})
}

func ticketIssue(t *testing.T, f *Server, value string) Issued {
	t.Helper()
	for _, i := range f.Issued() {
		if i.Value == value {
			return i
		}
	}
	t.Fatalf("value not in Issued")
	return Issued{}
}

// rawResp is an answer as read over HTTP.
type rawResp struct {
	status int
	ct     string
	body   map[string]any
	text   string
}

func do(t *testing.T, req *http.Request) rawResp {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := rawResp{status: resp.StatusCode, ct: resp.Header.Get("Content-Type"), text: string(b)}
	json.Unmarshal(b, &r.body)
	return r
}

func newReq(t *testing.T, method, url, ct, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return req
}

// assertLegacy checks the legacy error envelope: HTTP 200, a numeric errcode, an errmsg.
func assertLegacy(t *testing.T, r rawResp, code float64) {
	t.Helper()
	if r.status != 200 || r.body["errcode"] != code || r.body["errmsg"] == "" || !strings.HasPrefix(r.ct, "application/json") {
		t.Fatalf("got %d %s %s, want HTTP 200 errcode %v", r.status, r.ct, r.text, code)
	}
}

// assertNew checks the new error envelope: the status, code, a message and a requestid.
func assertNew(t *testing.T, r rawResp, status int, code string) {
	t.Helper()
	rid, _ := r.body["requestid"].(string)
	if r.status != status || r.body["code"] != code || r.body["message"] == "" || len(rid) != 36 || !strings.HasPrefix(r.ct, "application/json") {
		t.Fatalf("got %d %s %s, want %d code %s", r.status, r.ct, r.text, status, code)
	}
}

func TestEnvelopes(t *testing.T) {
	e := setup(t, Options{ClientIP: "192.0.2.55"})
	e.fake.AddApp("k", "s")
	e.fake.AddApp("ipk", "s")
	e.fake.SetFault("ipk", Fault{Mode: FaultIPNotAllowed})
	u := e.url
	tok := e.token(t, dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}).Value
	e.clock.Advance(time.Second)

	t.Run("legacy success", func(t *testing.T) {
		r := do(t, newReq(t, "GET", u+"/gettoken?appkey=k&appsecret=s", "", ""))
		if r.status != 200 || r.body["errcode"] != 0.0 || r.body["errmsg"] != "ok" || r.body["access_token"] != tok || r.body["expires_in"] != 7200.0 {
			t.Fatalf("got %d %s", r.status, r.text)
		}
	})
	t.Run("new success", func(t *testing.T) {
		r := do(t, newReq(t, "POST", u+"/v1.0/oauth2/accessToken", "application/json", `{"appKey":"k","appSecret":"s"}`))
		if r.status != 200 || r.body["accessToken"] != tok || r.body["expireIn"] != 7200.0 || len(r.body) != 2 {
			t.Fatalf("got %d %s", r.status, r.text)
		}
	})
	t.Run("legacy wrong secret", func(t *testing.T) {
		assertLegacy(t, do(t, newReq(t, "GET", u+"/gettoken?appkey=k&appsecret=x", "", "")), 40096)
	})
	t.Run("legacy wrong corpsecret", func(t *testing.T) {
		assertLegacy(t, do(t, newReq(t, "GET", u+"/gettoken?corpid=k&corpsecret=x", "", "")), 40089)
	})
	t.Run("legacy missing params", func(t *testing.T) {
		assertLegacy(t, do(t, newReq(t, "GET", u+"/gettoken", "", "")), 40035)
	})
	t.Run("new wrong secret", func(t *testing.T) {
		assertNew(t, do(t, newReq(t, "POST", u+"/v1.0/oauth2/accessToken", "application/json", `{"appKey":"k","appSecret":"x"}`)), 400, "invalidClientIdOrSecret")
	})
	t.Run("new form body", func(t *testing.T) {
		assertNew(t, do(t, newReq(t, "POST", u+"/v1.0/oauth2/accessToken", "application/x-www-form-urlencoded", "appKey=k&appSecret=s")), 400, "Missingbody")
	})
	t.Run("new json without content type", func(t *testing.T) {
		assertNew(t, do(t, newReq(t, "POST", u+"/v1.0/oauth2/accessToken", "", `{"appKey":"k","appSecret":"s"}`)), 400, "Missingbody")
	})
	t.Run("new no body", func(t *testing.T) {
		assertNew(t, do(t, newReq(t, "POST", u+"/v1.0/oauth2/accessToken", "application/json", "")), 400, "Missingbody")
	})
	t.Run("legacy ip names client ip", func(t *testing.T) {
		r := do(t, newReq(t, "GET", u+"/gettoken?appkey=ipk&appsecret=s", "", ""))
		assertLegacy(t, r, 60020)
		if !strings.Contains(r.body["errmsg"].(string), "192.0.2.55") {
			t.Fatalf("errmsg %q does not name the client ip", r.body["errmsg"])
		}
	})
	t.Run("new ip names client ip", func(t *testing.T) {
		r := do(t, newReq(t, "POST", u+"/v1.0/oauth2/accessToken", "application/json", `{"appKey":"ipk","appSecret":"s"}`))
		assertNew(t, r, 403, "Forbidden.AccessDenied.IpNotInWhiteList")
		if !strings.Contains(r.body["message"].(string), "192.0.2.55") {
			t.Fatalf("message %q does not name the client ip", r.body["message"])
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		assertLegacy(t, do(t, newReq(t, "GET", u+"/topapi/nosuch", "", "")), 404)
	})
}

func TestTicketAuthPlacement(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	e.fake.AddApp("k2", "s")
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	expired := e.token(t, dingtalk.App{Type: dingtalk.Internal, Key: "k2", Secret: "s"}).Value
	e.clock.Advance(3 * time.Hour)
	tok := e.token(t, app).Value
	u := e.url + "/v1.0/oauth2/jsapiTickets"
	lu := e.url + "/get_jsapi_ticket"

	withHeader := func(name, value string) *http.Request {
		req := newReq(t, "POST", u, "", "")
		req.Header.Set(name, value)
		return req
	}
	t.Run("new header", func(t *testing.T) {
		r := do(t, withHeader(AccessTokenHeader, tok))
		if r.status != 200 || !ticketRE.MatchString(r.body["jsapiTicket"].(string)) || r.body["expireIn"] != 7200.0 {
			t.Fatalf("got %d %s", r.status, r.text)
		}
	})
	t.Run("new query rejected", func(t *testing.T) {
		assertNew(t, do(t, newReq(t, "POST", u+"?access_token="+tok, "", "")), 400, "AuthenticationFailed.MissingParameter")
	})
	t.Run("new bearer rejected", func(t *testing.T) {
		assertNew(t, do(t, withHeader("Authorization", "Bearer "+tok)), 400, "AuthenticationFailed.MissingParameter")
	})
	t.Run("new unknown token", func(t *testing.T) {
		assertNew(t, do(t, withHeader(AccessTokenHeader, "fake-at-00000000000000000000000000000000")), 400, "InvalidAuthentication")
	})
	t.Run("new expired token", func(t *testing.T) {
		assertNew(t, do(t, withHeader(AccessTokenHeader, expired)), 400, "InvalidAuthentication")
	})
	t.Run("new ticket value is not a token", func(t *testing.T) {
		tk := e.ticket(t, dingtalk.V1, tok).Value
		assertNew(t, do(t, withHeader(AccessTokenHeader, tk)), 400, "InvalidAuthentication")
	})
	t.Run("legacy query", func(t *testing.T) {
		r := do(t, newReq(t, "GET", lu+"?access_token="+tok, "", ""))
		if r.status != 200 || r.body["errcode"] != 0.0 || !ticketRE.MatchString(r.body["ticket"].(string)) || r.body["expires_in"] != 7200.0 {
			t.Fatalf("got %d %s", r.status, r.text)
		}
	})
	t.Run("legacy missing", func(t *testing.T) {
		req := newReq(t, "GET", lu, "", "")
		req.Header.Set(AccessTokenHeader, tok)
		assertLegacy(t, do(t, req), 41001)
	})
	t.Run("legacy unknown", func(t *testing.T) {
		assertLegacy(t, do(t, newReq(t, "GET", lu+"?access_token=nope", "", "")), 40014)
	})
	t.Run("legacy expired", func(t *testing.T) {
		assertLegacy(t, do(t, newReq(t, "GET", lu+"?access_token="+expired, "", "")), 42001)
	})
}

// call names one request kind of the client.
type callKind struct {
	name   string
	legacy bool
	ticket bool
	corp   bool
}

var callKinds = []callKind{
	{name: "token v1"},
	{name: "token legacy", legacy: true},
	{name: "token corp", legacy: true, corp: true},
	{name: "ticket v1", ticket: true},
	{name: "ticket legacy", legacy: true, ticket: true},
}

// run makes the call for app key "k" (secret "s"); a ticket call first fetches a token.
func (e *env) run(t *testing.T, ck callKind) (dingtalk.Grant, error) {
	t.Helper()
	app := dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}
	if ck.legacy {
		app.API = dingtalk.Legacy
	}
	if ck.corp {
		app.Type = dingtalk.Corp
	}
	if !ck.ticket {
		return e.client.AccessToken(t.Context(), app)
	}
	api := app.API
	tok := e.token(t, app)
	return e.client.JSAPITicket(t.Context(), api, tok.Value)
}

func TestFaultModes(t *testing.T) {
	type expect struct {
		code  string
		class dingtalk.Class
	}
	// pick returns the expectation for a call kind.
	pick := func(legacy, newAPI expect) func(callKind) expect {
		return func(ck callKind) expect {
			if ck.legacy {
				return legacy
			}
			return newAPI
		}
	}
	same := func(x expect) func(callKind) expect { return func(callKind) expect { return x } }
	tests := []struct {
		mode FaultMode
		want func(callKind) expect
	}{
		{FaultBadCredentials, func(ck callKind) expect {
			switch {
			case ck.ticket && ck.legacy:
				return expect{"40014", dingtalk.ClassInvalidToken}
			case ck.ticket:
				return expect{"InvalidAuthentication", dingtalk.ClassInvalidToken}
			case ck.corp:
				return expect{"40089", dingtalk.ClassCredentials}
			case ck.legacy:
				return expect{"40096", dingtalk.ClassCredentials}
			}
			return expect{"invalidClientIdOrSecret", dingtalk.ClassCredentials}
		}},
		{FaultIPNotAllowed, pick(expect{"60020", dingtalk.ClassIPNotAllowed}, expect{"Forbidden.AccessDenied.IpNotInWhiteList", dingtalk.ClassIPNotAllowed})},
		{FaultQPSLimit, pick(expect{"90018", dingtalk.ClassRateLimited}, expect{"Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", dingtalk.ClassRateLimited})},
		{FaultGlobalQPS, pick(expect{"90002", dingtalk.ClassRateLimited}, expect{"Forbidden.AccessDenied.QpsLimitForApi", dingtalk.ClassRateLimited})},
		{FaultBusy, pick(expect{"-1", dingtalk.ClassUnavailable}, expect{"systemBusy", dingtalk.ClassUnavailable})},
		{FaultServerError, same(expect{"http_502", dingtalk.ClassUnavailable})},
		{FaultBanHTML, same(expect{"ip_ban", dingtalk.ClassBanned})},
		{FaultErrorPage, same(expect{"http_502", dingtalk.ClassUnavailable})},
		{FaultBanJSON, same(expect{"ip_ban", dingtalk.ClassBanned})},
		{FaultBadExpiry, same(expect{"bad_response", dingtalk.ClassUnavailable})},
	}
	for _, tt := range tests {
		for _, ck := range callKinds {
			t.Run(tt.mode.String()+"/"+ck.name, func(t *testing.T) {
				e := setup(t, Options{ClientIP: "192.0.2.99"})
				if ck.corp {
					e.fake.AddCorp("k", "s")
				} else {
					e.fake.AddApp("k", "s")
				}
				endpoint := EndpointToken
				if ck.ticket {
					endpoint = EndpointTicket // the token fetch before it must not be affected
				}
				e.fake.SetFault("k", Fault{Mode: tt.mode, Endpoint: endpoint})
				_, err := e.run(t, ck)
				w := tt.want(ck)
				de := dtErr(t, err, w.code, w.class)
				if tt.mode == FaultIPNotAllowed && !strings.Contains(de.Message, "192.0.2.99") {
					t.Fatalf("message %q does not name the client ip", de.Message)
				}
				kind := token.AccessToken
				if ck.ticket {
					kind = token.JSAPITicket
				}
				var n int
				for _, i := range e.fake.Issued() {
					if i.Kind == kind {
						n++
					}
				}
				// A bad expiry is an otherwise normal answer: the value was issued.
				if want := map[bool]int{true: 1, false: 0}[tt.mode == FaultBadExpiry]; n != want {
					t.Fatalf("%d %s values issued, want %d", n, kind, want)
				}
				e.fake.ClearFaults()
				if _, err := e.run(t, ck); err != nil {
					t.Fatalf("after ClearFaults: %v", err)
				}
			})
		}
	}
}

func TestFaultScopes(t *testing.T) {
	e := setup(t, Options{})
	for _, k := range []string{"a", "b"} {
		e.fake.AddApp(k, "s")
	}
	app := func(k string) dingtalk.App { return dingtalk.App{Type: dingtalk.Internal, Key: k, Secret: "s"} }
	fetch := func(k string) error { _, err := e.client.AccessToken(t.Context(), app(k)); return err }
	tokA, tokB := e.token(t, app("a")).Value, e.token(t, app("b")).Value

	e.fake.SetFault("a", Fault{Mode: FaultBusy})
	dtErr(t, fetch("a"), "systemBusy", dingtalk.ClassUnavailable)
	if err := fetch("b"); err != nil {
		t.Fatalf("per-key fault hit another key: %v", err)
	}
	// The ticket call of a's token is a's call.
	_, err := e.client.JSAPITicket(t.Context(), dingtalk.V1, tokA)
	dtErr(t, err, "systemBusy", dingtalk.ClassUnavailable)

	e.fake.SetFault("", Fault{Mode: FaultBanJSON})
	dtErr(t, fetch("a"), "systemBusy", dingtalk.ClassUnavailable) // per-key wins
	dtErr(t, fetch("b"), "ip_ban", dingtalk.ClassBanned)
	_, err = e.client.JSAPITicket(t.Context(), dingtalk.V1, "unknown-token")
	dtErr(t, err, "ip_ban", dingtalk.ClassBanned) // unattributed calls see the global fault

	// A per-key fault for another endpoint falls through to the global one.
	e.fake.SetFault("a", Fault{Mode: FaultBusy, Endpoint: EndpointTicket})
	dtErr(t, fetch("a"), "ip_ban", dingtalk.ClassBanned)
	e.fake.SetFault("", Fault{})
	if err := fetch("a"); err != nil {
		t.Fatalf("ticket-only fault hit the token endpoint: %v", err)
	}
	_, err = e.client.JSAPITicket(t.Context(), dingtalk.Legacy, tokA)
	dtErr(t, err, "-1", dingtalk.ClassUnavailable)
	if _, err := e.client.JSAPITicket(t.Context(), dingtalk.Legacy, tokB); err != nil {
		t.Fatalf("b's ticket: %v", err)
	}
	e.fake.SetFault("a", Fault{})
	if _, err := e.client.JSAPITicket(t.Context(), dingtalk.Legacy, tokA); err != nil {
		t.Fatalf("zero Fault did not remove the fault: %v", err)
	}
	e.fake.SetFault("a", Fault{Mode: FaultBusy})
	e.fake.SetFault("", Fault{Mode: FaultBusy})
	e.fake.ClearFaults()
	if err := errors.Join(fetch("a"), fetch("b")); err != nil {
		t.Fatalf("after ClearFaults: %v", err)
	}
}

func TestLatency(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	const lat = 100 * time.Millisecond
	e.fake.SetFault("k", Fault{Latency: lat})
	// Real time is what is under test here.
	start := time.Now()
	e.token(t, app)
	if d := time.Since(start); d < lat {
		t.Fatalf("answer after %v, want ≥ %v", d, lat)
	}
	// Latency combines with a mode.
	e.fake.SetFault("k", Fault{Mode: FaultBusy, Latency: lat})
	start = time.Now()
	_, err := e.client.AccessToken(t.Context(), app)
	dtErr(t, err, "systemBusy", dingtalk.ClassUnavailable)
	if d := time.Since(start); d < lat {
		t.Fatalf("busy answer after %v, want ≥ %v", d, lat)
	}
	// A client that gives up first gets its timeout.
	e.fake.SetFault("k", Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = e.client.AccessToken(ctx, app)
	dtErr(t, err, "timeout", dingtalk.ClassUnavailable)
}

func TestHang(t *testing.T) {
	for _, ck := range callKinds {
		t.Run(ck.name, func(t *testing.T) {
			e := setup(t, Options{})
			if ck.corp {
				e.fake.AddCorp("k", "s")
			} else {
				e.fake.AddApp("k", "s")
			}
			endpoint := EndpointToken
			if ck.ticket {
				endpoint = EndpointTicket
			}
			e.fake.SetFault("k", Fault{Mode: FaultHang, Endpoint: endpoint})

			// The client gives up.
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			app := dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}
			if ck.legacy {
				app.API = dingtalk.Legacy
			}
			if ck.corp {
				app.Type = dingtalk.Corp
			}
			tok := ""
			if ck.ticket {
				tok = e.token(t, app).Value
			}
			callWith := func(ctx context.Context) error {
				var err error
				if ck.ticket {
					_, err = e.client.JSAPITicket(ctx, app.API, tok)
				} else {
					_, err = e.client.AccessToken(ctx, app)
				}
				return err
			}
			dtErr(t, callWith(ctx), "timeout", dingtalk.ClassUnavailable)

			// The server closes: a client with no deadline is released.
			before := e.fake.TotalCalls()
			done := make(chan error, 1)
			go func() { done <- callWith(t.Context()) }()
			if err := e.fake.WaitCalls(t.Context(), before+1); err != nil {
				t.Fatal(err)
			}
			e.fake.Close()
			dtErr(t, <-done, "network", dingtalk.ClassUnavailable)
		})
	}
}

func TestCalls(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("a", "s")
	e.fake.AddCorp("c", "s")
	appA := dingtalk.App{Type: dingtalk.Internal, Key: "a", Secret: "s"}
	tok := e.token(t, appA).Value                                                                       // a token 1
	e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Internal, Key: "a", Secret: "x"})     // a token 2 (failed)
	e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Internal, Key: "ghost", Secret: "x"}) // ghost token 1
	e.token(t, dingtalk.App{Type: dingtalk.Corp, Key: "c", Secret: "s"})                                // c token 1
	e.fake.SetFault("a", Fault{Mode: FaultBusy, Endpoint: EndpointTicket})
	e.client.JSAPITicket(t.Context(), dingtalk.V1, tok)      // a ticket 1 (faulted)
	e.client.JSAPITicket(t.Context(), dingtalk.Legacy, tok)  // a ticket 2 (faulted)
	e.client.JSAPITicket(t.Context(), dingtalk.V1, "nosuch") // "" ticket 1
	want := map[string]Counts{"a": {Token: 2, Ticket: 2}, "ghost": {Token: 1}, "c": {Token: 1}, "": {Ticket: 1}}
	for k, w := range want {
		if got := e.fake.Calls(k); got != w {
			t.Errorf("Calls(%q) = %+v, want %+v", k, got, w)
		}
	}
	if got := e.fake.AllCalls(); len(got) != len(want) {
		t.Errorf("AllCalls() = %+v, want %+v", got, want)
	}
	if got := e.fake.Calls("never"); got != (Counts{}) {
		t.Errorf("Calls of an unseen key = %+v", got)
	}
	if got := e.fake.TotalCalls(); got != 7 {
		t.Errorf("TotalCalls() = %d, want 7", got)
	}
	// Control and unknown paths are not calls.
	do(t, newReq(t, "GET", e.url+"/_fake/calls", "", ""))
	do(t, newReq(t, "GET", e.url+"/nosuch", "", ""))
	if got := e.fake.TotalCalls(); got != 7 {
		t.Errorf("TotalCalls() = %d after control calls, want 7", got)
	}
}

func TestAutoBan(t *testing.T) {
	e := setup(t, Options{BanAfter: 3})
	e.fake.AddApp("k", "s")
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	for i := 0; i < 3; i++ {
		e.token(t, app)
	}
	_, err := e.client.AccessToken(t.Context(), app)
	dtErr(t, err, "ip_ban", dingtalk.ClassBanned)
	e.clock.Advance(BanDuration - time.Second)
	_, err = e.client.JSAPITicket(t.Context(), dingtalk.Legacy, "anything") // every endpoint is banned
	dtErr(t, err, "ip_ban", dingtalk.ClassBanned)
	e.clock.Advance(time.Second)
	e.token(t, app)
	if got := e.fake.Calls("k").Token; got != 5 {
		t.Fatalf("banned calls not counted: %d token calls, want 5", got)
	}

	t.Run("window", func(t *testing.T) {
		e := setup(t, Options{BanAfter: 3})
		e.fake.AddApp("k", "s")
		for round := 0; round < 3; round++ {
			for i := 0; i < 3; i++ {
				e.token(t, app)
			}
			e.clock.Advance(BanWindow) // older calls leave the window
		}
		for i := 0; i < 3; i++ {
			e.token(t, app)
		}
		_, err := e.client.AccessToken(t.Context(), app)
		dtErr(t, err, "ip_ban", dingtalk.ClassBanned)
	})
	t.Run("disabled", func(t *testing.T) {
		e := setup(t, Options{})
		e.fake.AddApp("k", "s")
		for i := 0; i < 50; i++ {
			e.token(t, app)
		}
	})
}

func TestConcurrentFetches(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	const n = 40
	values := make(chan string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := dingtalk.V1
			if i%2 == 0 {
				api = dingtalk.Legacy
			}
			a := app
			a.API = api
			g, err := e.client.AccessToken(context.Background(), a)
			if err != nil {
				errs <- err
				return
			}
			if _, err := e.client.JSAPITicket(context.Background(), api, g.Value); err != nil {
				errs <- err
			}
			values <- g.Value
		}()
	}
	wg.Wait()
	close(values)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for v := range values {
		seen[v] = true
	}
	if len(seen) != 1 || len(e.fake.Issued()) != 2 {
		t.Fatalf("%d distinct tokens, %d values issued; want 1 token and 1 ticket", len(seen), len(e.fake.Issued()))
	}
	if got := e.fake.Calls("k"); got != (Counts{Token: n, Ticket: n}) {
		t.Fatalf("Calls = %+v", got)
	}
}

func TestValuesUnguessable(t *testing.T) {
	const secret = "same-secret-for-both"
	var vals []string
	for i := 0; i < 2; i++ {
		e := setup(t, Options{})
		e.fake.AddApp("k", secret)
		g := e.token(t, dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: secret})
		vals = append(vals, g.Value, e.ticket(t, dingtalk.V1, g.Value).Value)
	}
	seen := map[string]bool{}
	for _, v := range vals {
		if seen[v] || strings.Contains(v, secret) || !(tokenRE.MatchString(v) || ticketRE.MatchString(v)) {
			t.Fatalf("value %q repeats, is malformed or derives from the secret", v)
		}
		seen[v] = true
	}
}

func TestWait(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	done := make(chan error, 1)
	go func() {
		done <- e.fake.Wait(t.Context(), func() bool { return e.fake.Calls("k").Token >= 2 })
	}()
	e.token(t, app)
	e.token(t, app)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.fake.WaitCalls(ctx, 100); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitCalls on a canceled context = %v", err)
	}
}

func TestLogsHaveNoSecrets(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const secret = "LOG-SECRET-vq82kz"
	e := setup(t, Options{Logger: logger, BanAfter: 100})
	e.fake.AddApp("k", secret)
	do(t, newReq(t, "POST", e.url+"/_fake/apps", "application/json", `{"key":"c","secret":"`+secret+`","corp":true}`))
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: secret}
	tok := e.token(t, app).Value
	tk := e.ticket(t, dingtalk.Legacy, tok).Value
	e.token(t, dingtalk.App{Type: dingtalk.Corp, Key: "c", Secret: secret})
	e.client.AccessToken(t.Context(), dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: secret + "x"})
	e.fake.SetFault("k", Fault{Mode: FaultBusy})
	e.client.AccessToken(t.Context(), app)
	e.fake.Revoke(tok)
	e.fake.Revoke(tk)
	out := buf.String()
	if !strings.Contains(out, "fake dingtalk") {
		t.Fatalf("nothing logged: %q", out)
	}
	for _, s := range []string{secret, tok, tk} {
		if strings.Contains(out, s) {
			t.Fatalf("log contains a secret or token value")
		}
	}
	if !strings.Contains(out, token.Fingerprint(tok)) {
		t.Fatal("log does not identify values by fingerprint")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
