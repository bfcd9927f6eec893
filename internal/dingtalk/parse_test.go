package dingtalk

import (
	"strings"
	"testing"
	"time"
)

// want is the expected outcome of one parse: a grant value and lifetime, or an error's identity.
type want struct {
	value   string
	expires time.Duration

	family  Family
	status  int
	code    string
	class   Class
	msgHas  string // a substring the message must contain, when set
	isError bool
}

func ok(value string, secs int) want {
	return want{value: value, expires: time.Duration(secs) * time.Second}
}

func fail(family Family, status int, code string, class Class) want {
	return want{isError: true, family: family, status: status, code: code, class: class}
}

func (w want) with(msg string) want { w.msgHas = msg; return w }

func check(t *testing.T, g Grant, e *Error, w want) {
	t.Helper()
	if !w.isError {
		if e != nil {
			t.Fatalf("got error %v, want grant", e)
		}
		if g.Value != w.value || g.ExpiresIn != w.expires {
			t.Fatalf("got grant (%q, %v), want (%q, %v)", g.Value, g.ExpiresIn, w.value, w.expires)
		}
		return
	}
	if e == nil {
		t.Fatalf("got grant (%q, %v), want error %s", g.Value, g.ExpiresIn, w.code)
	}
	if e.Family != w.family || e.Status != w.status || e.Code != w.code || e.Class != w.class {
		t.Fatalf("got error {family %s status %d code %q class %d}, want {family %s status %d code %q class %d}",
			e.Family, e.Status, e.Code, e.Class, w.family, w.status, w.code, w.class)
	}
	if w.msgHas != "" && !strings.Contains(e.Message, w.msgHas) {
		t.Fatalf("message %q does not contain %q", e.Message, w.msgHas)
	}
	if g != (Grant{}) {
		t.Fatalf("error came with a grant %+v", g)
	}
}

const (
	jsonCT  = "application/json"
	htmlCT  = "text/html; charset=utf-8"
	banHTML = "<!DOCTYPE html>\n<html><head><title>访问被拒绝</title></head><body>denied</body></html>"
	banJSON = `{"status":1111,"punish":"deny","url":"https://oapi.dingtalk.com/punish?x=1"}`
)

func TestParseLegacy(t *testing.T) {
	L, T := FamilyLegacy, FamilyTransport
	tests := []struct {
		name   string
		field  field
		status int
		ct     string
		body   string
		trunc  bool
		want   want
	}{
		{"token ok", tokenField, 200, jsonCT, `{"errcode":0,"errmsg":"ok","access_token":"tok-1","expires_in":7200}`, false, ok("tok-1", 7200)},
		{"token ok string errcode", tokenField, 200, jsonCT, `{"errcode":"0","errmsg":"ok","access_token":"tok-1","expires_in":7200}`, false, ok("tok-1", 7200)},
		{"token ok no errcode", tokenField, 200, jsonCT, `{"access_token":"tok-1","expires_in":7200}`, false, ok("tok-1", 7200)},
		{"token ok string expires", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":"7200"}`, false, ok("tok-1", 7200)},
		{"token ok float expires", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":7200.0}`, false, ok("tok-1", 7200)},
		{"token ok max expires", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":86400}`, false, ok("tok-1", 86400)},
		{"ticket ok", ticketField, 200, jsonCT, `{"errcode":0,"errmsg":"ok","ticket":"tkt-1","expires_in":7200}`, false, ok("tkt-1", 7200)},
		{"ticket field is not token field", ticketField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"token field is not ticket field", tokenField, 200, jsonCT, `{"errcode":0,"ticket":"tkt-1","expires_in":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},

		{"40096 bad appkey", tokenField, 200, jsonCT, `{"errcode":40096,"errmsg":"不合法的appKey或appSecret"}`, false, fail(L, 200, "40096", ClassCredentials).with("appKey")},
		{"40096 as string", tokenField, 200, jsonCT, `{"errcode":"40096","errmsg":"不合法的appKey或appSecret"}`, false, fail(L, 200, "40096", ClassCredentials)},
		{"40089 bad corpid", tokenField, 200, jsonCT, `{"errcode":40089,"errmsg":"不合法的corpid或corpsecret"}`, false, fail(L, 200, "40089", ClassCredentials)},
		{"60020 ip keeps message", tokenField, 200, jsonCT, `{"errcode":60020,"errmsg":"访问ip不在白名单之中,请求ip:198.51.100.23"}`, false, fail(L, 200, "60020", ClassIPNotAllowed).with("198.51.100.23")},
		{"90018 app qps", tokenField, 200, jsonCT, `{"errcode":90018,"errmsg":"当前企业对接口调用超过限制"}`, false, fail(L, 200, "90018", ClassRateLimited)},
		{"90002 global qps", tokenField, 200, jsonCT, `{"errcode":90002,"errmsg":"接口调用超过限制"}`, false, fail(L, 200, "90002", ClassRateLimited)},
		{"-1 busy", tokenField, 200, jsonCT, `{"errcode":-1,"errmsg":"系统繁忙"}`, false, fail(L, 200, "-1", ClassUnavailable)},
		{"-1 busy string", tokenField, 200, jsonCT, `{"errcode":"-1","errmsg":"系统繁忙"}`, false, fail(L, 200, "-1", ClassUnavailable)},
		{"40035 bad params", tokenField, 200, jsonCT, `{"errcode":40035,"errmsg":"缺少参数 corpid or appkey"}`, false, fail(L, 200, "40035", ClassBadRequest)},
		{"41001 missing token", ticketField, 200, jsonCT, `{"errcode":41001,"errmsg":"缺少access_token参数"}`, false, fail(L, 200, "41001", ClassBadRequest)},
		{"40014 invalid token", ticketField, 200, jsonCT, `{"errcode":40014,"errmsg":"不合法的access_token"}`, false, fail(L, 200, "40014", ClassInvalidToken)},
		{"42001 expired token", ticketField, 200, jsonCT, `{"errcode":42001,"errmsg":"access_token超时"}`, false, fail(L, 200, "42001", ClassInvalidToken)},
		{"40001 invalid token", ticketField, 200, jsonCT, `{"errcode":40001,"errmsg":"获取access_token时Secret错误"}`, false, fail(L, 200, "40001", ClassInvalidToken)},
		{"88 with sub_code string", ticketField, 200, "application/json;charset=UTF-8", `{"errcode":88,"sub_code":"40014","sub_msg":"不合法的access_token","errmsg":"ding talk error[subcode=40014,submsg=不合法的access_token]","request_id":"16l4ew3d47pdp"}`, false, fail(L, 200, "40014", ClassInvalidToken).with("不合法的access_token")},
		{"88 with sub_code number", ticketField, 200, jsonCT, `{"errcode":88,"sub_code":40014,"errmsg":"ding talk error"}`, false, fail(L, 200, "40014", ClassInvalidToken).with("ding talk error")},
		{"88 without sub_code", ticketField, 200, jsonCT, `{"errcode":88,"errmsg":"ding talk error"}`, false, fail(L, 200, "88", ClassUnavailable)},
		{"88 with a sub_code that is not a code", ticketField, 200, jsonCT, `{"errcode":88,"sub_code":[40014],"errmsg":"x"}`, false, fail(L, 200, "88", ClassUnavailable)},
		{"errcode float whole", ticketField, 200, jsonCT, `{"errcode":40014.0,"errmsg":"x"}`, false, fail(L, 200, "40014", ClassInvalidToken)},
		{"unknown code", tokenField, 200, jsonCT, `{"errcode":12345,"errmsg":"something new"}`, false, fail(L, 200, "12345", ClassUnavailable)},
		{"errcode wins over 5xx", tokenField, 500, jsonCT, `{"errcode":-1,"errmsg":"系统繁忙"}`, false, fail(L, 500, "-1", ClassUnavailable)},

		{"html 200", tokenField, 200, "text/html", banHTML, false, fail(T, 200, CodeIPBan, ClassBanned)},
		{"html 403 no content type", tokenField, 403, "", "  \n" + banHTML, false, fail(T, 403, CodeIPBan, ClassBanned)},
		{"html content type", tokenField, 200, htmlCT, `denied`, false, fail(T, 200, CodeIPBan, ClassBanned)},
		{"html truncated", tokenField, 200, htmlCT, banHTML, true, fail(T, 200, CodeIPBan, ClassBanned)},
		{"punish json", tokenField, 200, jsonCT, banJSON, false, fail(T, 200, CodeIPBan, ClassBanned)},
		{"punish json 405", tokenField, 405, jsonCT, `{"punish":"deny"}`, false, fail(T, 405, CodeIPBan, ClassBanned)},
		{"status 1111 string", tokenField, 200, jsonCT, `{"status":"1111"}`, false, fail(T, 200, CodeIPBan, ClassBanned)},

		{"malformed json", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"not an object", tokenField, 200, jsonCT, `["tok-1"]`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"null", tokenField, 200, jsonCT, `null`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"plain text 200", tokenField, 200, "text/plain", `ok`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"empty body", tokenField, 200, "", ``, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"truncated", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":7200}`, true, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"errcode object", tokenField, 200, jsonCT, `{"errcode":{"a":1},"access_token":"tok-1","expires_in":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"errcode float", tokenField, 200, jsonCT, `{"errcode":0.5,"access_token":"tok-1","expires_in":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"empty token", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"","expires_in":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires zero", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":0}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires negative", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":-7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires one day and a second", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":86401}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires absurd", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":1e30}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires fractional", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":7200.5}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires missing", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1"}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires null", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":null}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expires text", tokenField, 200, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":"soon"}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},

		{"502 plain", tokenField, 502, "text/plain", `502 Bad Gateway`, false, fail(T, 502, "http_502", ClassUnavailable)},
		{"503 json without errcode", tokenField, 503, jsonCT, `{"message":"down"}`, false, fail(T, 503, "http_503", ClassUnavailable)},
		{"404 plain", tokenField, 404, "text/plain", `404 page not found`, false, fail(T, 404, "http_404", ClassUnavailable)},
		{"errcode 0 on 500", tokenField, 500, jsonCT, `{"errcode":0,"access_token":"tok-1","expires_in":7200}`, false, fail(T, 500, "http_500", ClassUnavailable)},
		{"302", tokenField, 302, "", ``, false, fail(T, 302, "http_302", ClassUnavailable)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, e := parseLegacy(tt.status, tt.ct, []byte(tt.body), tt.trunc, tt.field)
			check(t, g, e, tt.want)
		})
	}
}

func TestParseNew(t *testing.T) {
	N, L, T := FamilyNew, FamilyLegacy, FamilyTransport
	newErr := func(code, msg string) string {
		return `{"requestid":"01A08FE7-68C3-7BBD-B223-447768EA4B29","code":"` + code + `","message":"` + msg + `"}`
	}
	const ct = "application/json;charset=utf-8"
	tests := []struct {
		name   string
		field  field
		status int
		ct     string
		body   string
		trunc  bool
		want   want
	}{
		{"token ok", tokenField, 200, ct, `{"accessToken":"tok-1","expireIn":7200}`, false, ok("tok-1", 7200)},
		{"token ok string expiry", tokenField, 200, ct, `{"accessToken":"tok-1","expireIn":"7200"}`, false, ok("tok-1", 7200)},
		{"ticket ok", ticketField, 200, ct, `{"jsapiTicket":"tkt-1","expireIn":7200}`, false, ok("tkt-1", 7200)},
		{"ticket field is not token field", ticketField, 200, ct, `{"accessToken":"tok-1","expireIn":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"snake case is not new api", tokenField, 200, ct, `{"access_token":"tok-1","expires_in":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},

		{"invalidClientIdOrSecret", tokenField, 400, ct, newErr("invalidClientIdOrSecret", "无效的clientId或者clientSecret"), false, fail(N, 400, "invalidClientIdOrSecret", ClassCredentials).with("clientSecret")},
		{"ip not in whitelist keeps message", tokenField, 403, ct, newErr("Forbidden.AccessDenied.IpNotInWhiteList", "访问ip不在白名单之中，request ip=198.51.100.23"), false, fail(N, 403, "Forbidden.AccessDenied.IpNotInWhiteList", ClassIPNotAllowed).with("198.51.100.23")},
		{"app qps", tokenField, 403, ct, newErr("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "qps"), false, fail(N, 403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", ClassRateLimited)},
		{"api qps", tokenField, 403, ct, newErr("Forbidden.AccessDenied.QpsLimitForApi", "qps"), false, fail(N, 403, "Forbidden.AccessDenied.QpsLimitForApi", ClassRateLimited)},
		{"bare app qps", tokenField, 429, ct, newErr("QpsLimitForAppkeyAndApi", "qps"), false, fail(N, 429, "QpsLimitForAppkeyAndApi", ClassRateLimited)},
		{"bare api qps", tokenField, 429, ct, newErr("QpsLimitForApi", "qps"), false, fail(N, 429, "QpsLimitForApi", ClassRateLimited)},
		{"systemBusy", tokenField, 503, ct, newErr("systemBusy", "系统繁忙"), false, fail(N, 503, "systemBusy", ClassUnavailable)},
		{"system.busy", tokenField, 500, ct, newErr("system.busy", "系统繁忙"), false, fail(N, 500, "system.busy", ClassUnavailable)},
		{"Missingbody", tokenField, 400, ct, newErr("Missingbody", "body is mandatory for this action."), false, fail(N, 400, "Missingbody", ClassBadRequest)},
		{"missing header", ticketField, 400, ct, newErr("AuthenticationFailed.MissingParameter", "缺少参数：x-acs-dingtalk-access-token"), false, fail(N, 400, "AuthenticationFailed.MissingParameter", ClassBadRequest)},
		{"InvalidAuthentication", ticketField, 400, ct, newErr("InvalidAuthentication", "不合法的access_token"), false, fail(N, 400, "InvalidAuthentication", ClassInvalidToken)},
		{"InvalidAuthentication 401", ticketField, 401, ct, newErr("InvalidAuthentication", "不合法的access_token"), false, fail(N, 401, "InvalidAuthentication", ClassInvalidToken)},
		{"branch on code not status 500", tokenField, 500, ct, newErr("invalidClientIdOrSecret", "x"), false, fail(N, 500, "invalidClientIdOrSecret", ClassCredentials)},
		{"branch on code not status 200", tokenField, 200, ct, newErr("invalidClientIdOrSecret", "x"), false, fail(N, 200, "invalidClientIdOrSecret", ClassCredentials)},
		{"unknown code 500", tokenField, 500, ct, newErr("unknownError", "未知错误"), false, fail(N, 500, "unknownError", ClassUnavailable)},
		{"unknown code 400", tokenField, 400, ct, newErr("somethingNew", "?"), false, fail(N, 400, "somethingNew", ClassUnavailable)},
		{"legacy envelope on api host", tokenField, 200, jsonCT, `{"errcode":404,"errmsg":"请求的URI地址不存在"}`, false, fail(L, 200, "404", ClassUnavailable)},

		{"502 plain", tokenField, 502, "text/plain", `Bad Gateway`, false, fail(T, 502, "http_502", ClassUnavailable)},
		{"500 empty", tokenField, 500, "", ``, false, fail(T, 500, "http_500", ClassUnavailable)},
		{"504 json without code", tokenField, 504, ct, `{}`, false, fail(T, 504, "http_504", ClassUnavailable)},
		{"404 plain", tokenField, 404, "text/plain", `404 page not found`, false, fail(T, 404, "http_404", ClassUnavailable)},
		{"html 200", tokenField, 200, "text/html", banHTML, false, fail(T, 200, CodeIPBan, ClassBanned)},
		{"html 503", tokenField, 503, "", banHTML, false, fail(T, 503, CodeIPBan, ClassBanned)},
		{"proxy html 502", tokenField, 502, htmlCT, "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>", false, fail(T, 502, "http_502", ClassUnavailable)},
		{"punish json", tokenField, 200, jsonCT, banJSON, false, fail(T, 200, CodeIPBan, ClassBanned)},
		{"punish json 403", ticketField, 403, jsonCT, banJSON, false, fail(T, 403, CodeIPBan, ClassBanned)},

		{"malformed", tokenField, 200, ct, `{"accessToken":`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"truncated", tokenField, 200, ct, `{"accessToken":"tok-1","expireIn":7200}`, true, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"empty token", tokenField, 200, ct, `{"accessToken":"","expireIn":7200}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expiry zero", tokenField, 200, ct, `{"accessToken":"tok-1","expireIn":0}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expiry negative", ticketField, 200, ct, `{"jsapiTicket":"tkt-1","expireIn":-1}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expiry too long", tokenField, 200, ct, `{"accessToken":"tok-1","expireIn":86401}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expiry huge", tokenField, 200, ct, `{"accessToken":"tok-1","expireIn":99999999999999999999}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
		{"expiry missing", tokenField, 200, ct, `{"accessToken":"tok-1"}`, false, fail(T, 200, CodeBadResponse, ClassUnavailable)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, e := parseNew(tt.status, tt.ct, []byte(tt.body), tt.trunc, tt.field)
			check(t, g, e, tt.want)
		})
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		class Class
		want  bool
	}{
		{ClassUnavailable, true}, {ClassRateLimited, true}, {ClassBanned, true}, {ClassInvalidToken, true},
		{ClassCredentials, false}, {ClassIPNotAllowed, false}, {ClassBadRequest, false},
	}
	for _, tt := range tests {
		if got := (&Error{Class: tt.class}).Retryable(); got != tt.want {
			t.Errorf("class %d: Retryable() = %v, want %v", tt.class, got, tt.want)
		}
	}
}

func TestScrub(t *testing.T) {
	const secret = "s3cr3t+/=&?% x"
	tests := []struct {
		name, msg string
	}{
		{"raw", "bad secret " + secret + " given"},
		{"query escaped", "appsecret=s3cr3t%2B%2F%3D%26%3F%25+x"},
		{"path escaped", "/s3cr3t+%2F=&%3F%25%20x/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scrub(tt.msg, []string{"", secret})
			for _, form := range []string{secret, "s3cr3t%2B", "s3cr3t+%2F"} {
				if strings.Contains(got, form) {
					t.Fatalf("scrub left %q in the message", form)
				}
			}
			if !strings.Contains(got, redacted) {
				t.Fatalf("scrub(%q) = %q, no redaction marker", tt.msg, got)
			}
		})
	}
	long := strings.Repeat("界", 1000)
	got := scrub(long, nil)
	if len(got) > maxMessageBytes+len("…") || !strings.HasSuffix(got, "…") {
		t.Fatalf("long message not bounded: %d bytes", len(got))
	}
	if !strings.HasPrefix(got, "界") || strings.ContainsRune(got, '\uFFFD') {
		t.Fatal("long message cut inside a rune")
	}
}
