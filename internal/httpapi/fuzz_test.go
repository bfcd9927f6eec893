package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/token"
)

// Credentials the fuzzed API hands out. Every one contains credStem, which nothing else in the API's
// answers contains, so a body with credStem in it carries a credential. hr's token holds the
// characters that JSON must escape, invalid UTF-8 and U+2028.
const (
	credStem    = "Fz9cred"
	fuzzCRMTok  = "Fz9cred-at-crm-0001"
	fuzzCRMTkt  = "Fz9cred-jt-crm-0002"
	fuzzHRTok   = "Fz9cred-at-hr-\"\\<>&\x01\xff\u2028-0003"
	fuzzKeyStem = "tkd_fz9key"
	fuzzBilling = "tkd_fz9key-billing-0123456789" // crm only
	fuzzAdmin   = "tkd_fz9key-admin-0123456789"   // all apps
	fuzzTight   = "tkd_fz9key-tight-0123456789"   // all apps, one request per (frozen) clock
)

// fuzzBroker is a broker double whose answers a fuzzed mode selects. Its errors carry credentials
// in their messages, which must never reach a response.
type fuzzBroker struct {
	mode uint8
	mu   sync.Mutex
	hits int
}

// The modes of fuzzBroker, and the 5xx status each allows (0: none).
const (
	modeOK          = iota // tokens and tickets as configured
	modeRejected           // 502: DingTalk rejects the credentials
	modeUnavailable        // 503 with Retry-After
	modeCooldown           // invalidate answers 429
	modeCanceled           // context canceled: 503
	modeUnknownApp         // 404
	modeNoTicket           // tickets: 404
	modeOpaque             // an unforeseen error: 503
	numModes
)

var allowed5xx = [numModes]int{modeRejected: http.StatusBadGateway, modeUnavailable: http.StatusServiceUnavailable,
	modeCanceled: http.StatusServiceUnavailable, modeOpaque: http.StatusServiceUnavailable}

func (b *fuzzBroker) err() error {
	switch b.mode {
	case modeRejected:
		return &broker.RejectedError{Code: "60020"}
	case modeUnavailable:
		return &broker.UnavailableError{RetryAfter: 1500 * time.Millisecond, Code: "systemBusy"}
	case modeCanceled:
		return context.Canceled
	case modeUnknownApp:
		return broker.ErrUnknownApp
	case modeOpaque:
		return errors.New("store said " + fuzzCRMTok + " and " + fuzzBilling)
	}
	return nil
}

func (b *fuzzBroker) hit() { b.mu.Lock(); b.hits++; b.mu.Unlock() }

func (b *fuzzBroker) Token(_ context.Context, k token.Key) (token.Token, error) {
	b.hit()
	if err := b.err(); err != nil {
		return token.Token{}, err
	}
	exp := fuzzNow.Add(time.Hour)
	switch {
	case k == token.Key{App: "crm", Kind: token.AccessToken}:
		return token.Token{Value: fuzzCRMTok, ExpiresAt: exp}, nil
	case k == token.Key{App: "crm", Kind: token.JSAPITicket} && b.mode != modeNoTicket:
		return token.Token{Value: fuzzCRMTkt, ExpiresAt: exp}, nil
	case k == token.Key{App: "hr", Kind: token.AccessToken}:
		return token.Token{Value: fuzzHRTok, ExpiresAt: exp}, nil
	case k.Kind == token.JSAPITicket:
		return token.Token{}, broker.ErrTicketDisabled
	}
	return token.Token{}, broker.ErrUnknownApp
}

func (b *fuzzBroker) Invalidate(ctx context.Context, app, _ string) (token.Token, error) {
	if b.mode == modeCooldown {
		b.hit()
		return token.Token{}, &broker.CooldownError{RetryAfter: 30 * time.Second}
	}
	return b.Token(ctx, token.Key{App: app, Kind: token.AccessToken})
}

func (b *fuzzBroker) Status() []broker.AppStatus { return nil }
func (b *fuzzBroker) Ready() bool                { return true }
func (b *fuzzBroker) StoreUp() bool              { return true }

var fuzzNow = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// Routes are the patterns a tokend_http_requests_total route label may take.
var fuzzRoutes = map[string]bool{"/v1/apps": true, "/v1/apps/{app}/access_token": true, "/v1/apps/{app}/jsapi_ticket": true,
	"/v1/apps/{app}/access_token/invalidate": true, "/v1/apps/{app}/jsapi_signature": true, "unmatched": true,
	"/v1/apps/{app}/proxy/{family}/{path...}": true}

// FuzzHandler drives the client API with fuzzed requests: method, target, credentials (none, a
// billing key limited to crm, an all-apps key, a rate-limited key, a wrong key or a fuzzed
// Authorization header), one more fuzzed header and a body, against a broker double whose answers a
// fuzzed mode selects. The request goes through http.ReadRequest and the checks net/http's server
// makes before calling a handler; what they reject never reaches tokend. It checks that:
//   - nothing panics, and no status is 5xx unless the broker's answer calls for exactly that one;
//   - every body is valid JSON, every response is no-store, every non-200 one a problem document
//     whose status and code match, with WWW-Authenticate on 401;
//   - no non-200 body, log line or audit event holds a credential or a client key (unless the
//     request itself carried that text: echoing a client's own input is no leak);
//   - without a valid key nothing reaches the broker and nothing but 401, 404 and 405 comes back;
//     the billing client never gets 200 for another app than crm;
//   - metrics label routes by pattern, never by raw path;
//   - the rate-limited client, whose clock never moves, is refused a second identical request.
//
// Run with go test -run '^$' -fuzz '^FuzzHandler$' ./internal/httpapi (scripts/ci-security.sh).
func FuzzHandler(f *testing.F) {
	for _, s := range []struct {
		method, target string
		auth           uint8
		hname, hvalue  string
		body           string
		mode           uint8
	}{
		{"GET", "/v1/apps", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/crm/access_token", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/hr/access_token", 2, "Accept", "*/*", "", modeOK},
		{"GET", "/v1/apps/hr/access_token", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/crm/jsapi_ticket", 3, "", "", "", modeNoTicket},
		{"POST", "/v1/apps/crm/access_token/invalidate", 1, "Content-Type", "application/json", `{"access_token":"old"}`, modeCooldown},
		{"POST", "/v1/apps/crm/jsapi_signature", 2, "", "", `{"url":"https://h5.example.com/p?a=%41#x","nonce_str":"abc","timestamp":1763800000000}`, modeOK},
		{"POST", "/v1/apps/crm/jsapi_signature", 2, "", "", `{"url":"https://h5.example.com/","timestamp":-1}`, modeOK},
		{"POST", "/v1/apps/crm/access_token/invalidate", 1, "", "", `{"access_token":"x","extra":1}`, modeOK},
		{"POST", "/v1/apps/crm/access_token/invalidate", 1, "", "", `{"access_token":"\xff\xfe"} {}`, modeOK},
		{"GET", "/v1/apps/crm/access_token", 0, "", "", "", modeOK},
		{"GET", "/v1/apps/crm/access_token", 4, "", "Bearer " + fuzzBilling + "x", "", modeOK},
		{"GET", "/v1/apps/crm/access_token", 4, "", "bearer   " + fuzzAdmin + "  ", "", modeOK},
		{"GET", "/v1/apps/../apps/crm/access_token", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/%2e%2e/crm/access_token", 1, "", "", "", modeOK},
		{"GET", "//v1//apps/crm/access_token", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/c%2Frm/access_token", 2, "", "", "", modeOK},
		{"GET", "/v1/apps/\xff/access_token", 2, "", "", "", modeOK},
		{"DELETE", "/v1/apps/crm/access_token", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/crm/access_token", 1, "", "", "", modeRejected},
		{"GET", "/v1/apps/crm/access_token", 2, "", "", "", modeUnavailable},
		{"GET", "/v1/apps/crm/access_token", 2, "", "", "", modeCanceled},
		{"GET", "/v1/apps/nope/access_token", 2, "", "", "", modeUnknownApp},
		{"GET", "/v1/apps/crm/access_token", 2, "", "", "", modeOpaque},
		{"GET", "http://evil.example/v1/apps/crm/access_token", 1, "", "", "", modeOK},
		{"OPTIONS", "*", 1, "", "", "", modeOK},
		{"GET", "/v1/apps/crm/proxy/api/v1.0/x", 1, "", "", "", modeOK},
		{"POST", "/v1/apps/crm/proxy/oapi/../../x", 2, "", "", "{}", modeOK},
	} {
		f.Add(s.method, s.target, s.auth, s.hname, s.hvalue, []byte(s.body), s.mode)
	}
	f.Fuzz(func(t *testing.T, method, target string, auth uint8, hname, hvalue string, body []byte, mode uint8) {
		mode %= numModes
		b := &fuzzBroker{mode: mode}
		var logs bytes.Buffer
		var events []httpapi.Event
		reg := prometheus.NewRegistry()
		api, err := httpapi.New(httpapi.Options{
			Broker: b,
			Apps: []httpapi.App{
				{Name: "crm", Type: "dingtalk", JSAPITicket: true, CorpID: "dingcorp", AgentID: "310804070"},
				{Name: "hr", Type: "dingtalk"},
			},
			Clients: []httpapi.Client{
				{Name: "billing", KeySHA256: config.HashKey(fuzzBilling), Apps: []string{"crm"}},
				{Name: "admin", KeySHA256: config.HashKey(fuzzAdmin), Apps: []string{"*"}},
				{Name: "tight", KeySHA256: config.HashKey(fuzzTight), Apps: []string{"*"}, RPS: 1, Burst: 1},
			},
			Now:        func() time.Time { return fuzzNow },
			Logger:     slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Registerer: reg,
			Gatherer:   reg,
			Audit:      func(e httpapi.Event) { events = append(events, e) },
		})
		if err != nil {
			t.Fatal(err)
		}
		h := api.Handler()

		var raw bytes.Buffer
		raw.WriteString(method + " " + target + " HTTP/1.1\r\nHost: tokend.test\r\n")
		var key string
		switch auth % 6 {
		case 1:
			key = fuzzBilling
		case 2:
			key = fuzzAdmin
		case 3:
			key = fuzzTight
		case 4:
			raw.WriteString("Authorization: " + hvalue + "\r\n")
		case 5:
			raw.WriteString("Authorization: Bearer tkd_fz9wrong\r\n")
		}
		if key != "" {
			raw.WriteString("Authorization: Bearer " + key + "\r\n")
		}
		if hname != "" {
			raw.WriteString(hname + ": " + hvalue + "\r\n")
		}
		raw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
		raw.Write(body)
		wire := raw.Bytes()

		serve := func() *httptest.ResponseRecorder {
			req, ok := readRequest(wire)
			if !ok {
				return nil
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}
		rec := serve()
		if rec == nil {
			t.Skip("net/http rejects this request before any handler")
		}
		// What the client wrote itself (all but the Authorization header we add) may come back to it.
		input := method + "\n" + target + "\n" + hname + "\n" + hvalue + "\n" + string(body)
		echo := func(s string) bool { return strings.Contains(input, s) }
		status, respBody := rec.Code, rec.Body.Bytes()

		if status >= 500 && status != allowed5xx[mode] {
			t.Fatalf("%s %q (mode %d) got %d: %s", method, target, mode, status, respBody)
		}
		if strings.Contains(logs.String(), "handler panic") {
			t.Fatalf("%s %q: a handler panicked", method, target)
		}
		if !json.Valid(respBody) {
			t.Fatalf("%s %q got %d with a body that is not JSON: %q", method, target, status, respBody)
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-store" {
			t.Fatalf("%s %q got %d with Cache-Control %q", method, target, status, got)
		}
		if status == http.StatusOK {
			checkCredential(t, key, respBody)
		} else {
			checkProblem(t, rec)
			if bytes.Contains(respBody, []byte(credStem)) && !echo(credStem) {
				t.Fatalf("%s %q got %d with a credential in its body", method, target, status)
			}
		}
		if bytes.Contains(respBody, []byte(fuzzKeyStem)) && !echo(fuzzKeyStem) {
			t.Fatalf("%s %q got %d with a client key in its body", method, target, status)
		}
		for _, s := range []string{credStem, fuzzKeyStem} {
			if strings.Contains(logs.String(), s) && !echo(s) {
				t.Fatalf("%s %q: a credential or key in the log", method, target)
			}
			for _, e := range events {
				if strings.Contains(e.Type+e.Client+e.App+e.Fingerprint+e.Result+e.Remote, s) && !echo(s) {
					t.Fatalf("%s %q: a credential or key in audit event %q", method, target, e.Type)
				}
			}
		}

		b.mu.Lock()
		hits := b.hits
		b.mu.Unlock()
		authed := key != "" || strings.Contains(hvalue, fuzzKeyStem)
		if !authed && hits > 0 {
			t.Fatalf("%s %q without a valid key reached the broker", method, target)
		}
		if !authed && status != http.StatusUnauthorized && status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			t.Fatalf("%s %q without a valid key got %d", method, target, status)
		}
		checkRouteLabels(t, reg)

		// The tight client's clock never moves: after a request that passed authentication (any
		// answer but 401, 405 and a 404 for an unknown route), the same request is refused.
		if key == fuzzTight && status != http.StatusUnauthorized && status != http.StatusMethodNotAllowed &&
			!(status == http.StatusNotFound && problemCode(respBody) == "not_found") {
			if again := serve(); again.Code != http.StatusTooManyRequests {
				t.Fatalf("%s %q: the rate-limited client's second request got %d, want 429", method, target, again.Code)
			}
		}
	})
}

// checkCredential checks a 200 body: a credential in it is one the broker gave, and never hr's to the
// billing client.
func checkCredential(t *testing.T, key string, body []byte) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("200 body is not a JSON object: %v", err)
	}
	for _, field := range []string{"access_token", "ticket"} {
		v, ok := doc[field]
		if !ok {
			continue
		}
		s, _ := v.(string)
		switch s {
		case fuzzCRMTok, fuzzCRMTkt:
		case strings.ToValidUTF8(fuzzHRTok, "\uFFFD"):
			if key == fuzzBilling {
				t.Fatal("the billing client got hr's token")
			}
		default:
			t.Fatalf("200 with a %s the broker never gave", field)
		}
	}
}

func problemCode(body []byte) string {
	var doc struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &doc)
	return doc.Code
}

// readRequest parses wire as net/http's server would, returning false for what the server itself
// answers itself (a malformed request line or header block, invalid header names or values).
func readRequest(wire []byte) (*http.Request, bool) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(wire)))
	if err != nil || req.ProtoMajor != 1 {
		return nil, false
	}
	// ReadRequest has moved the Host header to req.Host; the handler never looks at it.
	for k, vv := range req.Header {
		if !validHeaderName(k) {
			return nil, false
		}
		for _, v := range vv {
			if !validHeaderValue(v) {
				return nil, false
			}
		}
	}
	req.RemoteAddr = "192.0.2.1:40000"
	return req, true
}

// validHeaderName is RFC 7230's token, as httpguts.ValidHeaderFieldName.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue refuses control characters other than tab, as httpguts.ValidHeaderFieldValue.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// checkProblem checks a non-200 response is a problem document consistent with its status.
func checkProblem(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var doc struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
		Title  string `json:"title"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("%d: problem body does not decode: %v", rec.Code, err)
	}
	wantCode := map[int]string{400: "bad_request", 401: "unauthenticated", 403: "forbidden", 405: "method_not_allowed",
		429: "rate_limited", 502: "upstream_rejected", 503: "upstream_unavailable"}[rec.Code]
	switch {
	case rec.Header().Get("Content-Type") != "application/problem+json":
		t.Fatalf("%d: Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
	case doc.Status != rec.Code:
		t.Fatalf("%d: problem status %d", rec.Code, doc.Status)
	case rec.Code == 404 && doc.Code != "not_found" && doc.Code != "app_not_found":
		t.Fatalf("404 with code %q", doc.Code)
	case rec.Code != 404 && doc.Code != wantCode:
		t.Fatalf("%d with code %q, want %q", rec.Code, doc.Code, wantCode)
	case rec.Code == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer"):
		t.Fatal("401 without WWW-Authenticate: Bearer")
	case (rec.Code == 429 || rec.Code == 503) && rec.Header().Get("Retry-After") == "":
		t.Fatalf("%d without Retry-After", rec.Code)
	}
}

// checkRouteLabels checks that every route label of the HTTP metrics is a route pattern.
func checkRouteLabels(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && !fuzzRoutes[l.GetValue()] {
					t.Fatalf("metric %s has route label %q, not a route pattern", mf.GetName(), l.GetValue())
				}
			}
		}
	}
}
