package dingtalk

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const leakTicket = "TiCkEt-Qw8+/=&zz1\"<>" // URL and JSON encoding change it

func TestISVRequestShape(t *testing.T) {
	suite := Suite{Key: "suitekey1", Secret: leakSecret}
	tests := []struct {
		name     string
		call     func(c *Client) (Grant, error)
		path     string
		wantJSON map[string]string
	}{
		{
			name:     "suite token",
			call:     func(c *Client) (Grant, error) { return c.SuiteAccessToken(t.Context(), suite, leakTicket) },
			path:     "/prefix/v1.0/oauth2/suiteAccessToken",
			wantJSON: map[string]string{"suiteKey": "suitekey1", "suiteSecret": leakSecret, "suiteTicket": leakTicket},
		},
		{
			name: "corp token",
			call: func(c *Client) (Grant, error) { return c.CorpAccessToken(t.Context(), suite, leakTicket, "dingcorp1") },
			path: "/prefix/v1.0/oauth2/corpAccessToken",
			wantJSON: map[string]string{"suiteKey": "suitekey1", "suiteSecret": leakSecret, "authCorpId": "dingcorp1",
				"suiteTicket": leakTicket},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := recorder(t, 200, `{"accessToken":"tok-1","expireIn":7200}`)
			c := New(Options{APIBase: srv.URL + "/prefix", OAPIBase: "http://127.0.0.1:1"})
			g, err := tt.call(c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if g.Value != "tok-1" || g.ExpiresIn != 2*time.Hour {
				t.Fatalf("grant = %+v", g)
			}
			r := <-reqs
			if r.method != http.MethodPost || r.path != tt.path || r.rawQuery != "" {
				t.Fatalf("request %s %s?%s, want POST %s", r.method, r.path, r.rawQuery, tt.path)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var got map[string]string
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("body %q: %v", r.body, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantJSON) {
				t.Fatalf("body %v, want %v", got, tt.wantJSON)
			}
		})
	}
	t.Run("corp jsapi ticket is the legacy call", func(t *testing.T) {
		srv, reqs := recorder(t, 200, `{"errcode":0,"errmsg":"ok","ticket":"tkt-1","expires_in":7200}`)
		c := New(Options{APIBase: "http://127.0.0.1:1", OAPIBase: srv.URL})
		if _, err := c.CorpJSAPITicket(t.Context(), leakToken); err != nil {
			t.Fatal(err)
		}
		if r := <-reqs; r.method != http.MethodGet || r.path != "/get_jsapi_ticket" || r.query.Get("access_token") != leakToken {
			t.Fatalf("request %s %s %v", r.method, r.path, r.query)
		}
	})
}

func TestISVErrorClasses(t *testing.T) {
	suite := Suite{Key: "suitekey1", Secret: leakSecret}
	tests := []struct {
		name   string
		status int
		reply  string
		class  Class
		code   string
	}{
		{"corp not authorized", 400, `{"code":"InvalidAuthCorpId","message":"corp not authorized","requestid":"r"}`, ClassCorpNotAuthorized, "InvalidAuthCorpId"},
		{"corp not authorized legacy", 200, `{"errcode":40078,"errmsg":"corp not authorized"}`, ClassCorpNotAuthorized, "40078"},
		{"invalid suite ticket", 400, `{"code":"InvalidSuiteTicket","message":"853005 签名中套件ticket参数无效","requestid":"r"}`, ClassInvalidSuiteTicket, "InvalidSuiteTicket"},
		{"invalid suite ticket legacy", 200, `{"errcode":853005,"errmsg":"bad ticket"}`, ClassInvalidSuiteTicket, "853005"},
		{"credentials", 400, `{"code":"invalidClientIdOrSecret","message":"bad","requestid":"r"}`, ClassCredentials, "invalidClientIdOrSecret"},
		// DingTalk echoing what it was sent must not carry the secret or the ticket into the error.
		{"echo", 400, `{"code":"InvalidSuiteTicket","message":"ticket ` + jsonEscaped(leakTicket) + ` secret ` + jsonEscaped(leakSecret) + `","requestid":"r"}`, ClassInvalidSuiteTicket, "InvalidSuiteTicket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := recorder(t, tt.status, tt.reply)
			c := New(Options{APIBase: srv.URL})
			for _, call := range []func() (Grant, error){
				func() (Grant, error) { return c.SuiteAccessToken(t.Context(), suite, leakTicket) },
				func() (Grant, error) { return c.CorpAccessToken(t.Context(), suite, leakTicket, "dingcorp1") },
			} {
				_, err := call()
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("error %v is not a *Error", err)
				}
				if de.Class != tt.class || de.Code != tt.code {
					t.Fatalf("class %d code %q, want %d %q", de.Class, de.Code, tt.class, tt.code)
				}
				if de.Retryable() {
					t.Fatalf("%s is retryable on a timer", tt.code)
				}
				for _, s := range []string{leakSecret, leakTicket, jsonEscaped(leakTicket)} {
					if strings.Contains(err.Error(), s) {
						t.Fatalf("error %q leaks %q", err, s)
					}
				}
			}
		})
	}
}

func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

func TestValidCorpID(t *testing.T) {
	for id, want := range map[string]bool{
		"dingcorpa":                          true,
		"ding1234567890abcdef1234567890abcd": true,
		"corp_1.a-b":                         true,
		"":                                   false,
		".":                                  false,
		"..":                                 false,
		"a/b":                                false,
		"a b":                                false,
		"a%2F":                               false,
		"-x":                                 false,
		strings.Repeat("a", 128):             true,
		strings.Repeat("a", 129):             false,
	} {
		if got := ValidCorpID(id); got != want {
			t.Errorf("ValidCorpID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestOpenSuiteStream(t *testing.T) {
	srv, reqs := recorder(t, 200, `{"endpoint":"wss://gw.example/connect","ticket":"tkt-`+leakTicket[:5]+`"}`)
	c := New(Options{APIBase: srv.URL})
	ep, err := c.OpenSuiteStream(t.Context(), Suite{Key: "suitekey1", Secret: leakSecret}, "tokend/test")
	if err != nil || ep.URL != "wss://gw.example/connect" || ep.Ticket == "" {
		t.Fatalf("endpoint %+v, %v", ep, err)
	}
	r := <-reqs
	var body struct {
		ClientID      string `json:"clientId"`
		ClientSecret  string `json:"clientSecret"`
		Subscriptions []struct{ Type, Topic string }
		UA            string `json:"ua"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || r.method != http.MethodPost || r.path != "/v1.0/gateway/connections/open" {
		t.Fatalf("request %s %s %q: %v", r.method, r.path, r.body, err)
	}
	if body.ClientID != "suitekey1" || body.ClientSecret != leakSecret || len(body.Subscriptions) != 1 ||
		body.Subscriptions[0].Type != "EVENT" || body.Subscriptions[0].Topic != "*" || body.UA != "tokend/test" {
		t.Fatalf("body %+v", body)
	}

	bad, _ := recorder(t, 400, `{"code":"invalidClientIdOrSecret","message":"bad `+jsonEscaped(leakSecret)+`"}`)
	_, err = New(Options{APIBase: bad.URL}).OpenSuiteStream(t.Context(), Suite{Key: "k", Secret: leakSecret}, "")
	var de *Error
	if !errors.As(err, &de) || de.Class != ClassCredentials || strings.Contains(err.Error(), leakSecret) {
		t.Fatalf("refusal: %v", err)
	}
	empty, _ := recorder(t, 200, `{"endpoint":""}`)
	if _, err := New(Options{APIBase: empty.URL}).OpenSuiteStream(t.Context(), Suite{Key: "k", Secret: "s"}, ""); !errors.As(err, &de) || de.Code != CodeBadResponse {
		t.Fatalf("empty answer: %v", err)
	}
}
