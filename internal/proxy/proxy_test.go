package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/token"
)

// The broker is what cmd/tokend gives the proxy for both.
var (
	_ proxy.Tokens = (*broker.Broker)(nil)
	_ proxy.Gate   = (*broker.Broker)(nil)
)

// tokens is a broker double: one current token per app, replaced by Invalidate of the current value
// with the next value of its list.
type tokens struct {
	mu          sync.Mutex
	cur         string
	next        []string
	invalidated []string
	invErr      error
}

func (f *tokens) Token(_ context.Context, k token.Key) (token.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k.Kind != token.AccessToken {
		return token.Token{}, errors.New("wrong kind")
	}
	return token.Token{Value: f.cur, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f *tokens) InvalidateKey(_ context.Context, _ token.Key, value string) (token.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, value)
	if f.invErr != nil {
		return token.Token{}, f.invErr
	}
	if value == f.cur && len(f.next) > 0 {
		f.cur, f.next = f.next[0], f.next[1:]
	}
	return token.Token{Value: f.cur, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f *tokens) reports() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalidated...)
}

// gate is a Gate double that counts and refuses on demand.
type gate struct {
	mu     sync.Mutex
	egress int
	bans   int
	refuse error
}

func (g *gate) Egress(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.egress++
	return g.refuse
}

func (g *gate) ReportBan(context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.bans++
}

func (g *gate) counts() (int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.egress, g.bans
}

// upstream is a real HTTP server standing in for DingTalk; handler sees every call.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	calls []*http.Request
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.calls = append(u.calls, r.Clone(context.Background()))
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) n() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.calls)
}

func (u *upstream) call(i int) *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[i]
}

// front serves p for one app and family at /{path...} and records what Forward returned.
type front struct {
	*httptest.Server
	mu   sync.Mutex
	outs []proxy.Outcome
	errs []error
}

func newFront(t *testing.T, p *proxy.Proxy, fam proxyrule.Family) *front {
	t.Helper()
	f := &front{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, err := proxyrule.Clean(r.URL.EscapedPath())
		if err != nil {
			http.Error(w, "bad path", http.StatusBadRequest)
			return
		}
		out, err := p.Forward(w, r, proxy.Target{App: "crm", Family: fam, Path: path})
		f.mu.Lock()
		f.outs = append(f.outs, out)
		f.errs = append(f.errs, err)
		f.mu.Unlock()
		if err != nil {
			status := out.Status
			if status == 0 {
				status = 599
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(status)
			return
		}
		if out.Abort {
			panic(http.ErrAbortHandler)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *front) last() (proxy.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.outs[len(f.outs)-1], f.errs[len(f.errs)-1]
}

type setup struct {
	tokens *tokens
	gate   *gate
	reg    *prometheus.Registry
	opts   proxy.Options
}

func newProxy(t *testing.T, up *upstream, mutate func(*setup)) *proxy.Proxy {
	t.Helper()
	s := &setup{tokens: &tokens{cur: "tok-1", next: []string{"tok-2", "tok-3"}}, gate: &gate{}, reg: prometheus.NewRegistry()}
	s.opts = proxy.Options{Tokens: s.tokens, Gate: s.gate, APIBase: up.URL, OAPIBase: up.URL, Registerer: s.reg, Timeout: 10 * time.Second}
	if mutate != nil {
		mutate(s)
	}
	p, err := proxy.New(s.opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestRewriting(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "session=upstream")
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "secret-hop")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"errcode":0,"errmsg":"ok"}`)
	})
	for _, fam := range []proxyrule.Family{proxyrule.API, proxyrule.OAPI} {
		t.Run(string(fam), func(t *testing.T) {
			before := up.n()
			f := newFront(t, newProxy(t, up, nil), fam)
			req, _ := http.NewRequest(http.MethodPost, f.URL+"/topapi/v2/user/get?b=2&access_token=PLACEHOLDER&a=%20x&acc%65ss_token=P2", strings.NewReader(`{"userid":"u1"}`))
			req.Header.Set("Authorization", "Bearer tkd_client_key")
			req.Header.Set("Cookie", "c=1")
			req.Header.Set("X-Acs-Dingtalk-Access-Token", "PLACEHOLDER")
			req.Header.Set("X-Tokend-App", "crm")
			req.Header.Set("Connection", "X-Drop-Me")
			req.Header.Set("X-Drop-Me", "1")
			req.Header.Set("Proxy-Authorization", "Basic x")
			req.Header.Set("X-Keep", "kept")
			req.Header.Set("User-Agent", "dingtalk-sdk/1.0")
			req.Header.Set("Content-Type", "application/json")
			resp, body := do(t, req)
			if resp.StatusCode != http.StatusCreated || string(body) != `{"errcode":0,"errmsg":"ok"}` {
				t.Fatalf("caller got %d %q", resp.StatusCode, body)
			}
			if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-Hop") != "" {
				t.Errorf("Set-Cookie or a hop-by-hop header came back: %v", resp.Header)
			}
			if got := resp.Header.Values("Cache-Control"); len(got) != 1 || got[0] != "no-store" {
				t.Errorf("Cache-Control = %v", got)
			}
			if resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("end-to-end headers lost: %v", resp.Header)
			}
			if up.n() != before+1 {
				t.Fatalf("%d upstream calls", up.n()-before)
			}
			got := up.call(before)
			for _, h := range []string{"Authorization", "Cookie", "X-Tokend-App", "X-Drop-Me", "Proxy-Authorization"} {
				if v := got.Header.Get(h); v != "" {
					t.Errorf("upstream got %s: %q", h, v)
				}
			}
			if got.Header.Get("X-Keep") != "kept" || got.Header.Get("Content-Type") != "application/json" {
				t.Errorf("end-to-end request headers lost: %v", got.Header)
			}
			if got.URL.Path != "/topapi/v2/user/get" {
				t.Errorf("path %q", got.URL.Path)
			}
			q := got.URL.RawQuery
			switch fam {
			case proxyrule.API:
				if q != "b=2&a=%20x" || got.Header.Get("X-Acs-Dingtalk-Access-Token") != "tok-1" {
					t.Errorf("api call: query %q, token header %q", q, got.Header.Get("X-Acs-Dingtalk-Access-Token"))
				}
			case proxyrule.OAPI:
				if q != "b=2&a=%20x&access_token=tok-1" || got.Header.Get("X-Acs-Dingtalk-Access-Token") != "" {
					t.Errorf("oapi call: query %q, token header %q", q, got.Header.Get("X-Acs-Dingtalk-Access-Token"))
				}
			}
			if ua := got.Header.Get("User-Agent"); ua != "dingtalk-sdk/1.0" {
				t.Errorf("User-Agent %q, want the caller's", ua)
			}
		})
	}
}

// invalidAnswers are DingTalk's invalid-token answers in both envelopes.
var invalidAnswers = []struct {
	name   string
	fam    proxyrule.Family
	status int
	body   string
	code   string
}{
	{"legacy 40014", proxyrule.OAPI, 200, `{"errcode":40014,"errmsg":"invalid access_token"}`, "40014"},
	{"legacy 42001 as a string", proxyrule.OAPI, 200, `{"errcode":"42001","errmsg":"expired"}`, "42001"},
	{"legacy 40001", proxyrule.OAPI, 200, `{"errmsg":"bad","errcode":40001}`, "40001"},
	{"topapi 88/40014", proxyrule.OAPI, 200, `{"errcode":88,"errmsg":"ding talk error[subcode=40014]","sub_code":"40014","sub_msg":"x"}`, "40014"},
	{"new 400 InvalidAuthentication", proxyrule.API, 400, `{"requestid":"R","code":"InvalidAuthentication","message":"x"}`, "InvalidAuthentication"},
	{"new 401 InvalidAuthentication", proxyrule.API, 401, `{"code":"InvalidAuthentication","message":"x"}`, "InvalidAuthentication"},
}

func TestRetryOnceWithNewToken(t *testing.T) {
	for _, c := range invalidAnswers {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				tok := r.Header.Get("X-Acs-Dingtalk-Access-Token") + r.URL.Query().Get("access_token")
				body, _ := io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "application/json")
				if tok == "tok-1" {
					w.WriteHeader(c.status)
					io.WriteString(w, c.body)
					return
				}
				fmt.Fprintf(w, `{"errcode":0,"token":%q,"body":%q}`, tok, body)
			})
			var s *setup
			p := newProxy(t, up, func(x *setup) { s = x })
			f := newFront(t, p, c.fam)
			resp, body := do(t, mustReq(t, http.MethodPost, f.URL+"/x", strings.NewReader("payload")))
			if resp.StatusCode != 200 || string(body) != `{"errcode":0,"token":"tok-2","body":"payload"}` {
				t.Fatalf("caller got %d %s", resp.StatusCode, body)
			}
			if up.n() != 2 {
				t.Errorf("%d upstream calls, want 2", up.n())
			}
			if got := s.tokens.reports(); len(got) != 1 || got[0] != "tok-1" {
				t.Errorf("invalidated %v", got)
			}
			if e, _ := s.gate.counts(); e != 2 {
				t.Errorf("egress asked %d times, want 2 (the retry too)", e)
			}
			out, err := f.last()
			if err != nil || !out.Retried || out.Result != "ok" {
				t.Errorf("outcome %+v, %v", out, err)
			}
			if got := retries(t, s.reg); got != 1 {
				t.Errorf("retries metric %v", got)
			}
		})
	}
}

// retries returns tokend_proxy_retries_total{app="crm"}.
func retries(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokend_proxy_retries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == "crm" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func mustReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestNoRetry(t *testing.T) {
	invalid := `{"errcode":40014,"errmsg":"invalid access_token"}`
	cases := []struct {
		name    string
		mutate  func(*setup)
		body    func() io.Reader
		reports int
	}{
		{"token unchanged", func(s *setup) { s.tokens.next = nil }, nil, 1},
		{"invalidate refused (cool-down)", func(s *setup) { s.tokens.invErr = &broker.CooldownError{RetryAfter: time.Second} }, nil, 1},
		{"body too large to keep", nil, func() io.Reader {
			return io.MultiReader(bytes.NewReader(make([]byte, proxy.KeepMax)), strings.NewReader("more"))
		}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, invalid)
			})
			var s *setup
			p := newProxy(t, up, func(x *setup) {
				s = x
				if c.mutate != nil {
					c.mutate(x)
				}
			})
			f := newFront(t, p, proxyrule.OAPI)
			var body io.Reader
			if c.body != nil {
				body = c.body()
			}
			resp, got := do(t, mustReq(t, http.MethodPost, f.URL+"/topapi/x", body))
			if resp.StatusCode != 200 || string(got) != invalid {
				t.Fatalf("caller got %d %s, want DingTalk's first answer", resp.StatusCode, got)
			}
			if up.n() != 1 {
				t.Errorf("%d upstream calls, want 1", up.n())
			}
			if got := len(s.tokens.reports()); got != c.reports {
				t.Errorf("%d reports, want %d", got, c.reports)
			}
		})
	}

	// The second answer says the same: it is what the caller gets, and there is no third call.
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, invalid) })
	f := newFront(t, newProxy(t, up, nil), proxyrule.OAPI)
	resp, got := do(t, mustReq(t, http.MethodGet, f.URL+"/user/get", nil))
	if resp.StatusCode != 200 || string(got) != invalid || up.n() != 2 {
		t.Errorf("caller got %d %s after %d calls; want the second answer after 2", resp.StatusCode, got, up.n())
	}
	if out, _ := f.last(); out.Result != "40014" || out.UpstreamCode != "40014" || !out.Retried {
		t.Errorf("outcome %+v", out)
	}
}

func TestLargeAnswerNotInspected(t *testing.T) {
	// An answer longer than the inspection window is passed on even if it starts like an
	// invalid-token envelope: envelopes are small.
	big := `{"errcode":40014,"pad":"` + strings.Repeat("x", 64<<10) + `"}`
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, big)
	})
	f := newFront(t, newProxy(t, up, nil), proxyrule.OAPI)
	_, got := do(t, mustReq(t, http.MethodGet, f.URL+"/x", nil))
	if string(got) != big || up.n() != 1 {
		t.Errorf("got %d bytes after %d calls", len(got), up.n())
	}
}

func TestStreamsAnswerWithoutBuffering(t *testing.T) {
	release := make(chan struct{})
	const total, first = 4 << 20, 1 << 20
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", fmt.Sprint(total))
		// The first part ends with a short write: a proxy that kept a tail shorter than its
		// server's buffer until the next read returned would not deliver it either.
		w.Write(make([]byte, first-100))
		w.(http.Flusher).Flush()
		w.Write(make([]byte, 100))
		w.(http.Flusher).Flush()
		// The rest only once the caller has received the first part: a proxy that buffered the
		// whole answer would never deliver it.
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(make([]byte, total-first))
	})
	f := newFront(t, newProxy(t, up, nil), proxyrule.API)
	resp, err := http.DefaultClient.Do(mustReq(t, http.MethodGet, f.URL+"/v1.0/media/x", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != total {
		t.Errorf("Content-Length %d", resp.ContentLength)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, first)); err != nil {
		t.Fatal(err)
	}
	close(release)
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != total-first {
		t.Errorf("rest: %d bytes, %v", n, err)
	}
}

func TestStreamsUploadWithoutBuffering(t *testing.T) {
	const first = proxy.KeepMax + 100<<10
	got := make(chan int64, 1)
	received := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadFull(r.Body, make([]byte, first)); err != nil {
			t.Errorf("upstream: %v", err)
			return
		}
		close(received)
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		got <- first + n
		fmt.Fprintf(w, `{"errcode":0}`)
	})
	f := newFront(t, newProxy(t, up, nil), proxyrule.OAPI)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, first))
		// The rest only once DingTalk has the first part: a proxy that read the whole upload
		// before calling would wait forever.
		<-received
		pw.Write(make([]byte, 1<<20))
		pw.Close()
	}()
	resp, _ := do(t, mustReq(t, http.MethodPost, f.URL+"/media/upload", pr))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := <-got; n != first+1<<20 {
		t.Errorf("upstream got %d bytes", n)
	}
}

func TestLimitsAndFailures(t *testing.T) {
	t.Run("body too large by Content-Length", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
		f := newFront(t, newProxy(t, up, func(s *setup) { s.opts.MaxBody = 1000 }), proxyrule.OAPI)
		resp, _ := do(t, mustReq(t, http.MethodPost, f.URL+"/x", bytes.NewReader(make([]byte, 1001))))
		if _, err := f.last(); resp.StatusCode != 413 || !errors.Is(err, proxy.ErrBodyTooLarge) || up.n() != 0 {
			t.Errorf("status %d, err %v, %d calls", resp.StatusCode, err, up.n())
		}
	})
	t.Run("body too large streamed", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
		f := newFront(t, newProxy(t, up, func(s *setup) { s.opts.MaxBody = proxy.KeepMax + 10 }), proxyrule.OAPI)
		// No Content-Length: the limit is found while streaming.
		body := io.MultiReader(bytes.NewReader(make([]byte, proxy.KeepMax+11)))
		resp, _ := do(t, mustReq(t, http.MethodPost, f.URL+"/x", struct{ io.Reader }{body}))
		if _, err := f.last(); resp.StatusCode != 413 || !errors.Is(err, proxy.ErrBodyTooLarge) {
			t.Errorf("status %d, err %v", resp.StatusCode, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		f := newFront(t, newProxy(t, up, func(s *setup) { s.opts.Timeout = 200 * time.Millisecond }), proxyrule.API)
		resp, _ := do(t, mustReq(t, http.MethodGet, f.URL+"/v1.0/x", nil))
		if out, err := f.last(); resp.StatusCode != 504 || !errors.Is(err, proxy.ErrUpstreamTimeout) || out.Result != "timeout" {
			t.Errorf("status %d, %+v, %v", resp.StatusCode, out, err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
		up.Close()
		f := newFront(t, newProxy(t, up, nil), proxyrule.API)
		resp, _ := do(t, mustReq(t, http.MethodGet, f.URL+"/v1.0/x", nil))
		if out, err := f.last(); resp.StatusCode != 502 || !errors.Is(err, proxy.ErrUpstreamUnreachable) || out.Result != "network" {
			t.Errorf("status %d, %+v, %v", resp.StatusCode, out, err)
		}
	})
	t.Run("caller leaves", func(t *testing.T) {
		arrived, gone := make(chan struct{}), make(chan struct{})
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done()
			close(gone)
		})
		f := newFront(t, newProxy(t, up, nil), proxyrule.API)
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-arrived
			cancel()
		}()
		req := mustReq(t, http.MethodGet, f.URL+"/v1.0/x", nil).WithContext(ctx)
		if _, err := http.DefaultClient.Do(req); err == nil {
			t.Error("the request succeeded")
		}
		select {
		case <-gone:
		case <-t.Context().Done():
			t.Fatal("DingTalk's request was not cancelled")
		}
	})
	t.Run("ban", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "<html><body>访问被拒绝</body></html>")
		})
		var s *setup
		f := newFront(t, newProxy(t, up, func(x *setup) { s = x }), proxyrule.OAPI)
		resp, _ := do(t, mustReq(t, http.MethodGet, f.URL+"/x", nil))
		out, err := f.last()
		var be *proxy.BannedError
		if resp.StatusCode != 503 || !errors.As(err, &be) || be.RetryAfter != proxy.BanPause || out.Result != "ip_ban" {
			t.Errorf("status %d, %+v, %v", resp.StatusCode, out, err)
		}
		if _, bans := s.gate.counts(); bans != 1 {
			t.Errorf("%d bans reported", bans)
		}
	})
	for _, c := range []struct {
		name   string
		refuse error
		result string
		status int
	}{
		{"over budget", errors.New("over budget"), "rate_limited", 429},
		{"ban pause", &broker.UnavailableError{RetryAfter: time.Minute}, "ip_ban", 503},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
			f := newFront(t, newProxy(t, up, func(s *setup) { s.gate.refuse = c.refuse }), proxyrule.OAPI)
			resp, _ := do(t, mustReq(t, http.MethodGet, f.URL+"/x", nil))
			out, err := f.last()
			if resp.StatusCode != c.status || out.Result != c.result || !errors.Is(err, c.refuse) || up.n() != 0 {
				t.Errorf("status %d, %+v, %v, %d calls", resp.StatusCode, out, err, up.n())
			}
		})
	}
}

func TestBrokenAnswerAborts(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(make([]byte, 64<<10))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // DingTalk's connection breaks mid-answer
	})
	f := newFront(t, newProxy(t, up, nil), proxyrule.API)
	resp, err := http.DefaultClient.Do(mustReq(t, http.MethodGet, f.URL+"/v1.0/x", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("the caller took a truncated chunked answer for a whole one")
	}
	if out, _ := f.last(); !out.Abort {
		t.Errorf("outcome %+v", out)
	}
}

// TestOutlivesServerReadTimeout: the server's ReadTimeout is sized for the token API; a proxied
// exchange that takes longer (DingTalk slow to answer) is not cut off by it, with or without a body.
func TestOutlivesServerReadTimeout(t *testing.T) {
	const slow = 600 * time.Millisecond
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		timer := time.NewTimer(slow) // DingTalk taking its time
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, `{"errcode":0}`)
	})
	p := newProxy(t, up, nil)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, _ := proxyrule.Clean(r.URL.EscapedPath())
		if _, err := p.Forward(w, r, proxy.Target{App: "crm", Family: proxyrule.OAPI, Path: path}); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	srv.Config.ReadTimeout = slow / 3
	srv.Start()
	t.Cleanup(srv.Close)
	for _, body := range []io.Reader{nil, strings.NewReader(`{"userid":"u"}`), bytes.NewReader(make([]byte, proxy.KeepMax+1))} {
		resp, got := do(t, mustReq(t, http.MethodPost, srv.URL+"/topapi/x", body))
		if resp.StatusCode != 200 || string(got) != `{"errcode":0}` {
			t.Errorf("slow exchange: %d %s", resp.StatusCode, got)
		}
	}
}
