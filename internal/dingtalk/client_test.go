package dingtalk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Distinctive values that must never show up in an error.
const (
	leakSecret = "SeCrEt-zq9x+/=&kw7" // includes characters that URL encoding changes
	leakToken  = "ToKeN-vv3j+/=&pp2"
)

// captured is one request as the test server saw it.
type captured struct {
	method, path, rawQuery string
	query                  url.Values
	header                 http.Header
	body                   []byte
	contentLength          int64
}

// recorder is an httptest server that records every request and answers with reply.
func recorder(t *testing.T, status int, reply string) (*httptest.Server, <-chan captured) {
	t.Helper()
	reqs := make(chan captured, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		reqs <- captured{r.Method, r.URL.Path, r.URL.RawQuery, r.URL.Query(), r.Header.Clone(), body, r.ContentLength}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

func TestAccessTokenRequestShape(t *testing.T) {
	tests := []struct {
		name      string
		app       App
		reply     string
		method    string
		path      string
		wantQuery url.Values
		wantJSON  map[string]string // nil: no body expected
	}{
		{
			name:     "internal v1",
			app:      App{Type: Internal, API: V1, Key: "dingkey1", Secret: leakSecret},
			reply:    `{"accessToken":"tok-v1","expireIn":7200}`,
			method:   http.MethodPost,
			path:     "/prefix/v1.0/oauth2/accessToken",
			wantJSON: map[string]string{"appKey": "dingkey1", "appSecret": leakSecret},
		},
		{
			name:     "internal default api is v1",
			app:      App{Type: Internal, Key: "dingkey1", Secret: leakSecret},
			reply:    `{"accessToken":"tok-v1","expireIn":7200}`,
			method:   http.MethodPost,
			path:     "/prefix/v1.0/oauth2/accessToken",
			wantJSON: map[string]string{"appKey": "dingkey1", "appSecret": leakSecret},
		},
		{
			name:      "internal legacy",
			app:       App{Type: Internal, API: Legacy, Key: "dingkey1", Secret: leakSecret},
			reply:     `{"errcode":0,"errmsg":"ok","access_token":"tok-v1","expires_in":7200}`,
			method:    http.MethodGet,
			path:      "/oprefix/gettoken",
			wantQuery: url.Values{"appkey": {"dingkey1"}, "appsecret": {leakSecret}},
		},
		{
			name:      "corp ignores api",
			app:       App{Type: Corp, API: V1, Key: "dingcorp1", Secret: leakSecret},
			reply:     `{"errcode":0,"errmsg":"ok","access_token":"tok-v1","expires_in":7200}`,
			method:    http.MethodGet,
			path:      "/oprefix/gettoken",
			wantQuery: url.Values{"corpid": {"dingcorp1"}, "corpsecret": {leakSecret}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := recorder(t, 200, tt.reply)
			c := New(Options{APIBase: srv.URL + "/prefix/", OAPIBase: srv.URL + "/oprefix"})
			g, err := c.AccessToken(t.Context(), tt.app)
			if err != nil {
				t.Fatalf("AccessToken: %v", err)
			}
			if g.Value != "tok-v1" || g.ExpiresIn != 2*time.Hour {
				t.Fatalf("grant = %+v", g)
			}
			r := <-reqs
			if r.method != tt.method || r.path != tt.path {
				t.Fatalf("request %s %s, want %s %s", r.method, r.path, tt.method, tt.path)
			}
			if tt.wantJSON == nil {
				if len(r.body) != 0 {
					t.Fatalf("unexpected body %q", r.body)
				}
				if fmt.Sprint(r.query) != fmt.Sprint(tt.wantQuery) {
					t.Fatalf("query %v, want %v", r.query, tt.wantQuery)
				}
				return
			}
			if r.rawQuery != "" {
				t.Fatalf("unexpected query %q", r.rawQuery)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json", ct)
			}
			var got map[string]string
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("body %q is not a JSON object of strings: %v", r.body, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantJSON) {
				t.Fatalf("body %v, want %v", got, tt.wantJSON)
			}
		})
	}
}

func TestJSAPITicketRequestShape(t *testing.T) {
	t.Run("v1 header only", func(t *testing.T) {
		srv, reqs := recorder(t, 200, `{"jsapiTicket":"tkt-1","expireIn":7200}`)
		c := New(Options{APIBase: srv.URL, OAPIBase: "http://127.0.0.1:1"})
		g, err := c.JSAPITicket(t.Context(), V1, leakToken)
		if err != nil {
			t.Fatalf("JSAPITicket: %v", err)
		}
		if g.Value != "tkt-1" || g.ExpiresIn != 2*time.Hour {
			t.Fatalf("grant = %+v", g)
		}
		r := <-reqs
		if r.method != http.MethodPost || r.path != "/v1.0/oauth2/jsapiTickets" {
			t.Fatalf("request %s %s", r.method, r.path)
		}
		if got := r.header.Get(AccessTokenHeader); got != leakToken {
			t.Fatalf("header %s = %q, want the token", AccessTokenHeader, got)
		}
		if r.rawQuery != "" {
			t.Fatalf("token or anything else in the query: %q", r.rawQuery)
		}
		if a := r.header.Get("Authorization"); a != "" {
			t.Fatalf("unexpected Authorization header %q", a)
		}
		if len(r.body) != 0 || r.contentLength > 0 {
			t.Fatalf("unexpected body %q (length %d)", r.body, r.contentLength)
		}
	})
	t.Run("legacy query", func(t *testing.T) {
		srv, reqs := recorder(t, 200, `{"errcode":0,"errmsg":"ok","ticket":"tkt-1","expires_in":7200}`)
		c := New(Options{APIBase: "http://127.0.0.1:1", OAPIBase: srv.URL})
		g, err := c.JSAPITicket(t.Context(), Legacy, leakToken)
		if err != nil {
			t.Fatalf("JSAPITicket: %v", err)
		}
		if g.Value != "tkt-1" {
			t.Fatalf("grant = %+v", g)
		}
		r := <-reqs
		if r.method != http.MethodGet || r.path != "/get_jsapi_ticket" {
			t.Fatalf("request %s %s", r.method, r.path)
		}
		if fmt.Sprint(r.query) != fmt.Sprint(url.Values{"access_token": {leakToken}}) {
			t.Fatalf("query %v", r.query)
		}
		if r.header.Get(AccessTokenHeader) != "" || r.header.Get("Authorization") != "" {
			t.Fatal("legacy call sent the token in a header")
		}
	})
}

func TestBadInputMakesNoCall(t *testing.T) {
	srv, reqs := recorder(t, 200, `{}`)
	good := New(Options{APIBase: srv.URL, OAPIBase: srv.URL})
	tests := []struct {
		name string
		call func() error
	}{
		{"unknown app type", func() error {
			_, err := good.AccessToken(t.Context(), App{Type: "isv", Key: "k", Secret: leakSecret})
			return err
		}},
		{"unknown api", func() error {
			_, err := good.AccessToken(t.Context(), App{Type: Internal, API: "v2", Key: "k", Secret: leakSecret})
			return err
		}},
		{"unknown ticket api", func() error {
			_, err := good.JSAPITicket(t.Context(), "v2", leakToken)
			return err
		}},
		{"bad base", func() error {
			_, err := New(Options{APIBase: "ftp://x"}).AccessToken(t.Context(), App{Type: Internal, Key: "k", Secret: leakSecret})
			return err
		}},
		{"base with query", func() error {
			_, err := New(Options{OAPIBase: srv.URL + "?x=1"}).JSAPITicket(t.Context(), Legacy, leakToken)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var de *Error
			if !errors.As(err, &de) || de.Class != ClassBadRequest || de.Code != CodeBadRequest {
				t.Fatalf("got %v, want a bad_request *Error", err)
			}
			assertNoLeak(t, err)
		})
	}
	select {
	case r := <-reqs:
		t.Fatalf("a call reached the server: %s %s", r.method, r.path)
	default:
	}
}

// assertNoLeak fails if err, however formatted, contains a secret in any encoding.
func assertNoLeak(t *testing.T, err error) {
	t.Helper()
	var forms []string
	for _, s := range []string{leakSecret, leakToken} {
		forms = append(forms, s, url.QueryEscape(s), url.PathEscape(s), strings.SplitN(s, "+", 2)[0])
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Fatalf("error leaks a secret: %q contains %q", text, f)
			}
		}
	}
	if u := errors.Unwrap(err); u != nil && u != context.Canceled && u != context.DeadlineExceeded {
		t.Fatalf("error unwraps to %T, which may carry the URL", u)
	}
}

// TestErrorsNeverLeak drives every call shape into failures whose natural error text would contain
// the secret or token (echoing messages, dropped connections, timeouts, redirects) and checks the
// *Error never does.
func TestErrorsNeverLeak(t *testing.T) {
	// echo answers with an error whose message repeats everything the request carried, in the
	// envelope of the family the path belongs to.
	echo := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		msg := "bad: " + r.URL.RawQuery + " " + r.URL.Query().Encode() + " " + string(body) + " " + r.Header.Get(AccessTokenHeader)
		if strings.HasPrefix(r.URL.Path, "/v1.0/") {
			b, _ := json.Marshal(map[string]any{"code": "invalidClientIdOrSecret", "message": msg, "requestid": "x"})
			w.WriteHeader(400)
			w.Write(b)
			return
		}
		b, _ := json.Marshal(map[string]any{"errcode": 40096, "errmsg": msg})
		w.Write(b)
	}
	dropAtOnce := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	dropMidBody := func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"errcode\":0,\"access")
		buf.Flush()
		conn.Close()
	}
	hang := func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client hanging up only once the body is consumed.
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}
	redirect := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json") // no HTML body: that would read as a ban page
		http.Redirect(w, r, "http://127.0.0.1:1/steal?"+r.URL.RawQuery+"&s="+url.QueryEscape(leakSecret), http.StatusTemporaryRedirect)
	}
	closedURL := func() string {
		s := httptest.NewServer(http.NotFoundHandler())
		s.Close()
		return s.URL
	}()

	type call struct {
		name string
		do   func(ctx context.Context, c *Client) error
	}
	calls := []call{
		{"token v1", func(ctx context.Context, c *Client) error {
			_, err := c.AccessToken(ctx, App{Type: Internal, API: V1, Key: "k", Secret: leakSecret})
			return err
		}},
		{"token legacy", func(ctx context.Context, c *Client) error {
			_, err := c.AccessToken(ctx, App{Type: Internal, API: Legacy, Key: "k", Secret: leakSecret})
			return err
		}},
		{"token corp", func(ctx context.Context, c *Client) error {
			_, err := c.AccessToken(ctx, App{Type: Corp, Key: "k", Secret: leakSecret})
			return err
		}},
		{"ticket v1", func(ctx context.Context, c *Client) error {
			_, err := c.JSAPITicket(ctx, V1, leakToken)
			return err
		}},
		{"ticket legacy", func(ctx context.Context, c *Client) error {
			_, err := c.JSAPITicket(ctx, Legacy, leakToken)
			return err
		}},
	}
	scenarios := []struct {
		name      string
		handler   http.HandlerFunc // nil: nothing listens
		timeout   time.Duration
		hcTime    time.Duration // http.Client.Timeout
		cancel    bool
		wantCode  string // "": any DingTalk code
		wantClass Class
	}{
		{name: "message echoes request", handler: echo, wantCode: "", wantClass: ClassCredentials},
		{name: "connection dropped", handler: dropAtOnce, wantCode: CodeNetwork},
		{name: "connection dropped mid body", handler: dropMidBody, wantCode: CodeNetwork},
		{name: "context deadline", handler: hang, timeout: 50 * time.Millisecond, wantCode: CodeTimeout},
		{name: "client timeout", handler: hang, hcTime: 50 * time.Millisecond, wantCode: CodeTimeout},
		{name: "context canceled", handler: hang, cancel: true, wantCode: CodeNetwork},
		{name: "redirect", handler: redirect, wantCode: "http_307"},
		{name: "connection refused", wantCode: CodeNetwork},
	}
	for _, sc := range scenarios {
		for _, cl := range calls {
			t.Run(sc.name+"/"+cl.name, func(t *testing.T) {
				base := closedURL
				var seen chan struct{}
				if sc.handler != nil {
					seen = make(chan struct{}, 4)
					srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						seen <- struct{}{}
						sc.handler(w, r)
					}))
					t.Cleanup(srv.Close)
					// Runs before srv.Close: a handler a failed test left hanging would block it.
					t.Cleanup(srv.CloseClientConnections)
					base = srv.URL
				}
				c := New(Options{APIBase: base, OAPIBase: base, HTTPClient: &http.Client{Timeout: sc.hcTime}})
				ctx := t.Context()
				if sc.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, sc.timeout)
					defer cancel()
				}
				if sc.cancel {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					go func() {
						<-seen // cancel once the request is in flight
						cancel()
					}()
				}
				err := cl.do(ctx, c)
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("got %T %v, want *dingtalk.Error", err, err)
				}
				if sc.wantCode == "" {
					if de.Family == FamilyTransport || de.Class != sc.wantClass {
						t.Fatalf("got %v (class %d), want a DingTalk error of class %d", err, de.Class, sc.wantClass)
					}
				} else if de.Code != sc.wantCode {
					t.Fatalf("code %q (%v), want %q", de.Code, err, sc.wantCode)
				}
				assertNoLeak(t, err)
				switch {
				case sc.timeout > 0 && !errors.Is(err, context.DeadlineExceeded):
					t.Fatal("deadline error does not match context.DeadlineExceeded")
				case sc.cancel && !errors.Is(err, context.Canceled):
					t.Fatal("cancel error does not match context.Canceled")
				}
				if sc.wantCode == "" {
					if !strings.Contains(de.Message, redacted) {
						t.Fatalf("echoed message %q was not visibly scrubbed", de.Message)
					}
				}
			})
		}
	}
}

func TestResponseBodyBounded(t *testing.T) {
	tests := []struct {
		name     string
		prefix   string
		wantCode string
	}{
		{"json", `{"errcode":0,"access_token":"`, CodeBadResponse},
		{"html", `<html><body>`, CodeIPBan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server would send far more than the client may read; it stops when the client hangs up.
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, tt.prefix)
				chunk := strings.Repeat("x", 64<<10)
				for i := 0; i < 1024; i++ { // up to 64 MiB
					if _, err := io.WriteString(w, chunk); err != nil {
						return
					}
				}
			}))
			t.Cleanup(srv.Close)
			c := New(Options{OAPIBase: srv.URL})
			_, err := c.AccessToken(t.Context(), App{Type: Corp, Key: "k", Secret: leakSecret})
			var de *Error
			if !errors.As(err, &de) || de.Code != tt.wantCode {
				t.Fatalf("got %v, want code %s", err, tt.wantCode)
			}
		})
	}
}

// TestTransportErrorIgnoresURLError checks the message is built from the cause, not the *url.Error,
// even when the cause itself would be harmless.
func TestTransportErrorIgnoresURLError(t *testing.T) {
	uerr := &url.Error{Op: "Get", URL: "https://oapi.dingtalk.com/gettoken?corpid=c&corpsecret=" + url.QueryEscape(leakSecret), Err: io.ErrUnexpectedEOF}
	e := transportError(t.Context(), "GET oapi.dingtalk.com/gettoken", uerr, []string{leakSecret})
	if e.Code != CodeNetwork || !strings.Contains(e.Message, "unexpected EOF") || strings.Contains(e.Message, "corpsecret") {
		t.Fatalf("transportError = %+v", e)
	}
	assertNoLeak(t, e)
	var nerr net.Error = &net.OpError{Op: "dial", Err: timeoutErr{}}
	if e := transportError(t.Context(), "op", &url.Error{Op: "Get", URL: "u", Err: nerr}, nil); e.Code != CodeTimeout {
		t.Fatalf("net timeout gave code %q", e.Code)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestKeepAliveReuse makes sure the client returns connections to the pool (the body is read and
// closed), so a steady refresh load does not open a connection per call.
func TestKeepAliveReuse(t *testing.T) {
	conns := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"errcode":0,"access_token":"tok","expires_in":7200}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := New(Options{OAPIBase: srv.URL})
	for i := 0; i < 5; i++ {
		if _, err := c.AccessToken(t.Context(), App{Type: Corp, Key: "k", Secret: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(conns); n != 1 {
		t.Fatalf("%d connections for 5 sequential calls, want 1", n)
	}
}
