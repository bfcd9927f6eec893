package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestCheckLegacy(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		want      *DingTalkError // nil: no error
		malformed bool
	}{
		{name: "ok number", body: `{"errcode":0,"errmsg":"ok","access_token":"x"}`},
		{name: "ok string", body: `{"errcode":"0","errmsg":"ok"}`},
		{name: "invalid token", body: `{"errcode":40014,"errmsg":"不合法的access_token"}`,
			want: &DingTalkError{Code: "40014", Message: "不合法的access_token"}},
		{name: "string errcode", body: `{"errcode":"42001","errmsg":"expired"}`,
			want: &DingTalkError{Code: "42001", Message: "expired"}},
		{name: "float errcode", body: `{"errcode":40001.0}`, want: &DingTalkError{Code: "40001"}},
		{name: "topapi sub_code", body: `{"errcode":88,"errmsg":"ding talk error[subcode=40014]","sub_code":"40014"}`,
			want: &DingTalkError{Code: "88", SubCode: "40014", Message: "ding talk error[subcode=40014]"}},
		{name: "numeric sub_code", body: `{"errcode":88,"sub_code":40014}`, want: &DingTalkError{Code: "88", SubCode: "40014"}},
		{name: "negative", body: `{"errcode":-1,"errmsg":"busy"}`, want: &DingTalkError{Code: "-1", Message: "busy"}},
		{name: "no errcode", body: `{"status":1111,"punish":"deny"}`, malformed: true},
		{name: "null errcode", body: `{"errcode":null}`, malformed: true},
		{name: "html", body: `<html>blocked</html>`, malformed: true},
		{name: "empty", body: ``, malformed: true},
		{name: "array", body: `[1]`, malformed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckLegacy([]byte(tt.body))
			checkDingTalk(t, err, tt.want, tt.malformed)
		})
	}
}

func TestCheckNew(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		want      *DingTalkError
		malformed bool
	}{
		{name: "ok", status: 200, body: `{"accessToken":"x","expireIn":7200}`},
		{name: "ok no body", status: 204},
		{name: "invalid auth", status: 400, body: `{"code":"InvalidAuthentication","message":"不合法的access_token","requestid":"r1"}`,
			want: &DingTalkError{Code: "InvalidAuthentication", Message: "不合法的access_token", Status: 400, RequestID: "r1"}},
		{name: "forbidden", status: 403, body: `{"code":"Forbidden.AccessDenied.IpNotInWhiteList","message":"ip"}`,
			want: &DingTalkError{Code: "Forbidden.AccessDenied.IpNotInWhiteList", Message: "ip", Status: 403}},
		{name: "5xx html", status: 502, body: `<html>bad gateway</html>`, malformed: true},
		{name: "no code", status: 500, body: `{"message":"x"}`, malformed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDingTalk(t, CheckNew(tt.status, []byte(tt.body)), tt.want, tt.malformed)
		})
	}
}

func checkDingTalk(t *testing.T, err error, want *DingTalkError, malformed bool) {
	t.Helper()
	switch {
	case malformed:
		if !errors.Is(err, ErrMalformedResponse) {
			t.Fatalf("err = %v, want ErrMalformedResponse", err)
		}
		var de *DingTalkError
		if errors.As(err, &de) {
			t.Fatalf("malformed body gave a *DingTalkError %+v", de)
		}
	case want == nil:
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
	default:
		var de *DingTalkError
		if !errors.As(err, &de) {
			t.Fatalf("err = %v (%T), want *DingTalkError", err, err)
		}
		if *de != *want {
			t.Fatalf("got %+v, want %+v", *de, *want)
		}
	}
}

func TestIsInvalidToken(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"legacy 40014", LegacyError(40014, ""), true},
		{"legacy 42001", LegacyError(42001, ""), true},
		{"legacy 40001", LegacyError(40001, ""), true},
		{"topapi 88/40014", LegacyError(88, "40014"), true},
		{"new InvalidAuthentication", NewAPIError("InvalidAuthentication"), true},
		{"wrapped", fmt.Errorf("list users: %w", LegacyError(40014, "")), true},
		{"from CheckLegacy", CheckLegacy([]byte(`{"errcode":"40014"}`)), true},
		{"from CheckNew", CheckNew(http.StatusBadRequest, []byte(`{"code":"InvalidAuthentication"}`)), true},
		{"88 other sub_code", LegacyError(88, "60011"), false},
		{"88 no sub_code", LegacyError(88, ""), false},
		{"permission", LegacyError(60011, ""), false},
		{"busy", LegacyError(-1, ""), false},
		{"ip", NewAPIError("Forbidden.AccessDenied.IpNotInWhiteList"), false},
		{"plain error naming the code", errors.New("dingtalk error 40014"), false},
		{"tokend error", &Error{Status: 401, Code: CodeUnauthenticated}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsInvalidToken(tt.err); got != tt.want {
				t.Fatalf("IsInvalidToken(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorIs(t *testing.T) {
	sentinels := []error{ErrBadRequest, ErrUnauthenticated, ErrForbidden, ErrAppNotFound, ErrRateLimited,
		ErrUpstreamRejected, ErrUpstreamUnavailable}
	codes := []string{CodeBadRequest, CodeUnauthenticated, CodeForbidden, CodeAppNotFound, CodeRateLimited,
		CodeUpstreamRejected, CodeUpstreamUnavailable}
	for i, code := range codes {
		t.Run(code, func(t *testing.T) {
			err := fmt.Errorf("context: %w", &Error{Status: 400, Code: code})
			for j, s := range sentinels {
				if got := errors.Is(err, s); got != (i == j) {
					t.Errorf("errors.Is(%s, %v) = %v", code, s, got)
				}
			}
		})
	}
	t.Run("no code", func(t *testing.T) {
		err := &Error{Status: http.StatusBadGateway, Detail: "Bad Gateway"}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				t.Errorf("a codeless 502 matches %v", s)
			}
		}
	})
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name, base, key string
		opts            *Options
		ok              bool
	}{
		{"http", "http://127.0.0.1:8080", "k", nil, true},
		{"https prefix slash", "https://gw.example.com/tokend/", "k", &Options{}, true},
		{"relative", "/v1", "k", nil, false},
		{"no scheme", "127.0.0.1:8080", "k", nil, false},
		{"ftp", "ftp://h", "k", nil, false},
		{"no host", "http://", "k", nil, false},
		{"userinfo", "http://u:p@h", "k", nil, false},
		{"query", "http://h/?x=1", "k", nil, false},
		{"fragment", "http://h/#f", "k", nil, false},
		{"bad escape", "http://h/%zz", "k", nil, false},
		{"empty key", "http://h", "", nil, false},
		{"key with newline", "http://h", "k\nX-Evil: 1", nil, false},
		{"negative refresh", "http://h", "k", &Options{RefreshBefore: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.base, tt.key, tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New(%q) error = %v, want ok %v", tt.base, err, tt.ok)
			}
			if err != nil && tt.key != "" && len(tt.key) > 1 && strings.Contains(err.Error(), tt.key) {
				t.Fatalf("error repeats the key")
			}
			if err == nil && c == nil {
				t.Fatal("nil client without error")
			}
		})
	}
}

func TestCheckApp(t *testing.T) {
	for _, app := range []string{"crm", "a", "0-x_y", "a123456789012345678901234567890123456789012345678901234567890123"} {
		if err := checkApp(app); err != nil {
			t.Errorf("checkApp(%q) = %v", app, err)
		}
	}
	for _, app := range []string{"", "CRM", "-x", "_x", "a/b", "..", "a b", "a%2f", "a123456789012345678901234567890123456789012345678901234567890123x"} {
		if err := checkApp(app); !errors.Is(err, ErrBadRequest) {
			t.Errorf("checkApp(%q) = %v, want ErrBadRequest", app, err)
		}
	}
}
