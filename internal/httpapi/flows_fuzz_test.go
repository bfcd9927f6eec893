package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/grant"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/token"
)

// recordingGrants is stubGrants that keeps the grants it was asked to exchange.
type recordingGrants struct {
	stubGrants
	got []dingtalk.UserGrant
}

func (g *recordingGrants) Exchange(ctx context.Context, app string, ug dingtalk.UserGrant) (grant.Result, bool, error) {
	g.got = append(g.got, ug)
	return g.stubGrants.Exchange(ctx, app, ug)
}

// FuzzFlows drives the flow routes (user token, Stream ticket, robot send) with fuzzed bodies and
// content types, as an allowed client. It checks that:
//   - nothing panics, and nothing is 5xx (the services behind the routes never fail here);
//   - every answer is JSON, every refusal a problem document whose status matches;
//   - a user token is exchanged only for a body that decodes to exactly one of code and
//     refresh_token, and for those values;
//   - a robot message is forwarded only when the body is one JSON object, byte for byte as sent;
//   - a body over 64 KiB is refused with 400 and reaches no service.
//
// Run with go test -run '^$' -fuzz '^FuzzFlows$' ./internal/httpapi (scripts/ci-security.sh).
func FuzzFlows(f *testing.F) {
	for _, s := range []struct {
		route       uint8
		contentType string
		body        string
	}{
		{0, "application/json", `{"code":"c1"}`},
		{0, "application/json", `{"refresh_token":"r1"}`},
		{0, "", `{"code":"c1","refresh_token":"r1"}`},
		{0, "application/json", `{"code":""}`},
		{0, "application/json", `{"code":1}`},
		{0, "text/plain", `{"code":"c1"} {"code":"c2"}`},
		{0, "", `[]`},
		{1, "application/json", `{"subscriptions":[{"type":"EVENT","topic":"*"}],"ua":"sdk/1"}`},
		{1, "application/json", `{"subscriptions":[]}`},
		{1, "", `{"subscriptions":[{"type":"CALLBACK","topic":"/v1.0/im/bot/messages/get"}],"local_ip":"10.0.0.1"}`},
		{2, "application/json", `{"msgtype":"text","text":{"content":"hi"}}`},
		{2, "application/json", `"text"`},
		{2, "", `{"msgtype":"text"}  `},
		{2, "application/json", "{\"a\":\"\xff\"}"},
		{2, "application/json", ``},
		{2, "application/json", `null`},
		{0, "application/json", `null`},
	} {
		f.Add(s.route, s.contentType, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, route uint8, contentType string, body []byte) {
		grants, streams, robots := &recordingGrants{}, &stubStreams{}, &stubRobots{resp: `{"errcode":0,"errmsg":"ok"}`}
		var logs bytes.Buffer
		api, err := httpapi.New(httpapi.Options{
			Broker:  &stubBroker{tokens: map[token.Key]token.Token{}, storeUp: true},
			Apps:    []httpapi.App{{Name: "crm", Type: "dingtalk"}},
			Clients: []httpapi.Client{{Name: "billing", KeySHA256: config.HashKey(billingKey), Apps: []string{"crm"}}},
			Now:     func() time.Time { return now },
			Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		api.SetFlows(httpapi.Flows{Grants: grants, Streams: streams, Robots: robots}, map[string]httpapi.Permissions{
			"billing": {UserTokens: []string{"crm"}, Streams: []string{"crm"}, Robots: []string{"alerts"}},
		})
		target := [...]string{"/v1/apps/crm/user_token", "/v1/apps/crm/stream_ticket", "/v1/robots/alerts/send"}[route%3]
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+billingKey)
		if contentType != "" && !strings.ContainsAny(contentType, "\r\n\x00") {
			req.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		api.Handler().ServeHTTP(w, req)

		if strings.Contains(logs.String(), "handler panic") || w.Code >= 500 {
			t.Fatalf("POST %s %q: %d, logs %q", target, body, w.Code, logs.String())
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("POST %s %q: body is not JSON: %q", target, body, w.Body)
		}
		if w.Code != http.StatusOK {
			var p struct{ Status int }
			if w.Header().Get("Content-Type") != "application/problem+json" || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != w.Code {
				t.Fatalf("POST %s %q: %d with %q %q, want a problem document", target, body, w.Code, w.Header().Get("Content-Type"), w.Body)
			}
		}
		if len(body) > 64<<10 && (w.Code != http.StatusBadRequest || len(grants.got)+len(robots.got) > 0) {
			t.Fatalf("POST %s with %d bytes: %d, forwarded %d", target, len(body), w.Code, len(grants.got)+len(robots.got))
		}
		switch route % 3 {
		case 0:
			var want struct {
				Code         string `json:"code"`
				RefreshToken string `json:"refresh_token"`
			}
			dec := json.NewDecoder(bytes.NewReader(body))
			one := dec.Decode(&want) == nil && !dec.More() && (want.Code == "") != (want.RefreshToken == "")
			if one != (w.Code == http.StatusOK) {
				t.Fatalf("user token for %q: %d (one grant in the body: %v)", body, w.Code, one)
			}
			if w.Code == http.StatusOK && (len(grants.got) != 1 || grants.got[0].Code != want.Code || grants.got[0].RefreshToken != want.RefreshToken) {
				t.Fatalf("user token for %q exchanged %+v", body, grants.got)
			}
		case 2:
			var object map[string]json.RawMessage
			isObject := len(body) <= 64<<10 && json.Unmarshal(body, &object) == nil && object != nil
			if isObject != (w.Code == http.StatusOK) {
				t.Fatalf("robot send of %q: %d (one JSON object: %v)", body, w.Code, isObject)
			}
			if w.Code == http.StatusOK && (len(robots.got) != 1 || !bytes.Equal(robots.got[0], body)) {
				t.Fatalf("robot send of %q forwarded %q", body, robots.got)
			}
			if w.Code != http.StatusOK && len(robots.got) > 0 {
				t.Fatalf("robot send of %q: %d, but forwarded", body, w.Code)
			}
		}
	})
}
