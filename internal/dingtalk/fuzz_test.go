package dingtalk

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParse checks the parsers' invariants on arbitrary answers: no panic; a grant always has a value
// and a sane lifetime; an error always has a code and a known class; the per-IP block is reported
// exactly when IsBan says so. The seeds include the corpus of error pages in testdata/pages. Run with
// go test -fuzz=FuzzParse ./internal/dingtalk/.
func FuzzParse(f *testing.F) {
	seeds := []struct {
		status int
		ct     string
		body   string
	}{
		{200, jsonCT, `{"errcode":0,"errmsg":"ok","access_token":"t","expires_in":7200}`},
		{200, jsonCT, `{"errcode":"40096","errmsg":"x"}`},
		{200, jsonCT, `{"errcode":88,"sub_code":"40014","sub_msg":"x"}`},
		{200, jsonCT, `{"accessToken":"t","expireIn":7200}`},
		{200, jsonCT, `{"jsapiTicket":"t","expireIn":"7200"}`},
		{400, jsonCT, `{"code":"invalidClientIdOrSecret","message":"x","requestid":"r"}`},
		{403, jsonCT, banJSON},
		{200, "text/html", banHTML},
		{502, "text/plain", "Bad Gateway"},
		{200, jsonCT, `{"errcode":0,"access_token":"t","expires_in":1e300}`},
		{200, jsonCT, `{"errcode":88,"sub_code":40014,"sub_msg":"x"}`},
		{200, jsonCT, `{"errcode":"0","access_token":"t","expires_in":"7200"}`},
		{200, jsonCT, `{"errcode":0,"access_token":"","expires_in":7200}`},
		{200, jsonCT, `{"errcode":0,"access_token":"t","expires_in":0}`},
		{200, jsonCT, `{"errcode":0,"access_token":"t","expires_in":86401}`},
		{200, jsonCT, `{"errcode":0,"access_token":"t","expires_in":7200.5}`},
		{200, jsonCT, `{"errcode":60020,"errmsg":"访问ip不在白名单之中,请求ip:203.0.113.7"}`},
		{200, jsonCT, `{"errcode":-1,"errmsg":"系统繁忙"}`},
		{200, jsonCT, `{"errcode":40014,"errmsg":"不合法的access_token"}`},
		{403, jsonCT, `{"code":"Forbidden.AccessDenied.IpNotInWhiteList","message":"ip 203.0.113.7","requestid":"r"}`},
		{403, jsonCT, `{"code":"Forbidden.AccessDenied.QpsLimitForAppkeyAndApi","message":"x"}`},
		{503, jsonCT, `{"code":"systemBusy","message":"x"}`},
		{400, jsonCT, `{"code":"InvalidAuthentication","message":"x"}`},
		{200, jsonCT, `{"accessToken":"t","expireIn":-1}`},
		{200, jsonCT, `{"code":"","accessToken":"t","expireIn":7200}`},
		{200, jsonCT, `null`},
		{200, jsonCT, ``},
		{200, "text/plain", `{"errcode":0,"access_token":"t","expires_in":7200}`},
		{200, jsonCT, `{"errcode":0,"access_token":"t","expires_in":7200}{"errcode":1}`},
		{500, "text/html; charset=utf-8", `<html><body>Internal Server Error</body></html>`},
	}
	for _, s := range seeds {
		for _, ticket := range []bool{false, true} {
			f.Add(s.status, s.ct, []byte(s.body), false, ticket)
		}
	}
	for _, pc := range pageCases {
		f.Add(pc.status, pc.ct, readPage(f, pc.file), false, false)
	}
	f.Add(200, jsonCT, []byte(`{"accessToken":"t","expireIn":7200}`), true, false)
	f.Fuzz(func(t *testing.T, status int, ct string, body []byte, truncated, ticket bool) {
		fld := tokenField
		if ticket {
			fld = ticketField
		}
		for name, parse := range map[string]func(int, string, []byte, bool, field) (Grant, *Error){
			"legacy": parseLegacy, "new": parseNew,
		} {
			g, e := parse(status, ct, body, truncated, fld)
			if ban := e != nil && e.Code == CodeIPBan; ban != IsBan(status, ct, body) {
				t.Fatalf("%s: error %+v but IsBan says %v", name, e, !ban)
			}
			if e == nil {
				if g.Value == "" || g.ExpiresIn <= 0 || g.ExpiresIn > MaxExpiresIn || g.ExpiresIn%time.Second != 0 {
					t.Fatalf("%s: bad grant %+v", name, g)
				}
				if truncated {
					t.Fatalf("%s: grant from a truncated body", name)
				}
				continue
			}
			if e.Code == "" || e.Class < ClassUnavailable || e.Class > ClassInvalidToken || e.Status != status {
				t.Fatalf("%s: bad error %+v", name, e)
			}
		}
	})
}

// FuzzScrub checks that scrub leaves no secret in a message, in any of the forms DingTalk might echo
// it (raw, URL-encoded, JSON-escaped), and returns bounded, valid UTF-8. Secrets of fewer than 3
// bytes, and those the redaction marker contains, are skipped: finding them proves nothing.
// Run with go test -run '^$' -fuzz '^FuzzScrub$' ./internal/dingtalk/ (scripts/ci-security.sh).
func FuzzScrub(f *testing.F) {
	f.Add("invalid appsecret SeCrEt-123 for appkey dingxx", "SeCrEt-123")
	f.Add("GET oapi.dingtalk.com/gettoken?appsecret=a%2Bb%26c: dial tcp: refused", "a+b&c")
	f.Add(`{"errmsg":"bad secret \u003cs\u003e"}`, "<s>")
	f.Add(strings.Repeat("x", 600)+"tail-secret", "tail-secret")
	f.Add("p\xffre-secret-\xfe", "secret")
	f.Add("token 中文密钥 in the middle", "中文密钥")
	f.Fuzz(func(t *testing.T, msg, secret string) {
		out := scrub(msg, []string{secret})
		if !utf8.ValidString(out) {
			t.Fatalf("scrub(%q) = %q: not valid UTF-8", msg, out)
		}
		if len(out) > maxMessageBytes+len("…") {
			t.Fatalf("scrub of %d bytes returned %d bytes, more than %d", len(msg), len(out), maxMessageBytes)
		}
		if len(secret) < 3 || strings.ContainsRune(secret, 0) || strings.Contains(redacted, secret) {
			return
		}
		forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
		if b, err := json.Marshal(secret); err == nil {
			forms = append(forms, string(b[1:len(b)-1]))
		}
		// The marker is cut out, so that a form it spells out on its own (or together with the text
		// next to it) does not count.
		rest := strings.ReplaceAll(out, redacted, "\x00")
		for _, form := range forms {
			if strings.Contains(msg, form) && strings.Contains(rest, form) {
				t.Fatalf("scrub(%q, %q) = %q: the secret is still there as %q", msg, secret, out, form)
			}
		}
	})
}
