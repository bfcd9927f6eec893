package proxy

import (
	"testing"

	"github.com/tokend/tokend/internal/proxyrule"
)

func TestClassify(t *testing.T) {
	const json = "application/json"
	cases := []struct {
		name   string
		fam    proxyrule.Family
		status int
		ct     string
		body   string
		want   verdict
		result string
	}{
		{"legacy ok", proxyrule.OAPI, 200, json, `{"errcode":0,"errmsg":"ok","result":{}}`, verdict{}, "ok"},
		{"legacy ok as string", proxyrule.OAPI, 200, json, `{"errcode":"0"}`, verdict{}, "ok"},
		{"legacy 40014", proxyrule.OAPI, 200, json, `{"errcode":40014,"errmsg":"x"}`, verdict{code: "40014", invalidToken: true}, "40014"},
		{"legacy 42001", proxyrule.OAPI, 200, json, `{"errcode":42001}`, verdict{code: "42001", invalidToken: true}, "42001"},
		{"legacy 40001", proxyrule.OAPI, 200, json, `{"errcode":40001}`, verdict{code: "40001", invalidToken: true}, "40001"},
		{"topapi 88/40014", proxyrule.OAPI, 200, json, `{"errcode":88,"sub_code":"40014"}`, verdict{code: "40014", invalidToken: true}, "40014"},
		{"topapi 88/other", proxyrule.OAPI, 200, json, `{"errcode":88,"sub_code":"60011"}`, verdict{code: "60011"}, "60011"},
		{"legacy other error", proxyrule.OAPI, 200, json, `{"errcode":60020,"errmsg":"ip"}`, verdict{code: "60020"}, "60020"},
		{"legacy qps", proxyrule.OAPI, 200, json, `{"errcode":90018}`, verdict{code: "90018"}, "90018"},
		{"legacy nested errcode 0 does not hide the real one", proxyrule.OAPI, 200, json, `{"result":{"errcode":0},"errcode":40014}`, verdict{code: "40014", invalidToken: true}, "40014"},
		{"legacy spaced errcode", proxyrule.OAPI, 200, json, `{ "errcode" : 40014 }`, verdict{code: "40014", invalidToken: true}, "40014"},
		{"legacy errcode 0 then nested error", proxyrule.OAPI, 200, json, `{"errcode":0,"result":{"errcode":1}}`, verdict{}, "ok"},
		{"legacy not an envelope", proxyrule.OAPI, 200, json, `{"hello":1}`, verdict{}, "ok"},
		{"legacy 404 page-less", proxyrule.OAPI, 404, "text/plain", `not found`, verdict{}, "http_404"},
		{"new ok", proxyrule.API, 200, json, `{"userId":"u"}`, verdict{}, "ok"},
		{"new InvalidAuthentication 400", proxyrule.API, 400, json, `{"code":"InvalidAuthentication","message":"x","requestid":"r"}`, verdict{code: "InvalidAuthentication", invalidToken: true}, "InvalidAuthentication"},
		{"new InvalidAuthentication 401", proxyrule.API, 401, json, `{"code":"InvalidAuthentication"}`, verdict{code: "InvalidAuthentication", invalidToken: true}, "InvalidAuthentication"},
		{"new other code", proxyrule.API, 403, json, `{"code":"Forbidden.AccessDenied.QpsLimitForApi"}`, verdict{code: "Forbidden.AccessDenied.QpsLimitForApi"}, "Forbidden.AccessDenied.QpsLimitForApi"},
		{"new legacy-style answer", proxyrule.API, 200, json, `{"errcode":40014}`, verdict{code: "40014", invalidToken: true}, "40014"},
		{"new 5xx no envelope", proxyrule.API, 502, "text/plain", "bad gateway", verdict{}, "http_502"},
		{"new unbounded code", proxyrule.API, 400, json, `{"code":"a b c"}`, verdict{code: "a b c"}, "other"},
		{"ban html", proxyrule.OAPI, 403, "text/html", "<html>denied</html>", verdict{ban: true}, ""},
		{"ban html without type", proxyrule.API, 200, "", "  <!DOCTYPE html><p>x</p>", verdict{ban: true}, ""},
		{"ban json", proxyrule.OAPI, 200, json, `{"status":1111,"punish":"deny"}`, verdict{ban: true}, ""},
		{"5xx html error page is no ban", proxyrule.API, 502, "text/html", "<html>502 Bad Gateway</html>", verdict{}, "http_502"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := classify(c.status, c.ct, []byte(c.body))
			if got != c.want {
				t.Errorf("classify = %+v, want %+v", got, c.want)
			}
			if c.result != "" {
				if r := resultOf(c.status, got); r != c.result {
					t.Errorf("result %q, want %q", r, c.result)
				}
			}
		})
	}
}

func TestStripToken(t *testing.T) {
	cases := map[string]string{
		"":                                 "",
		"a=1":                              "a=1",
		"access_token=x":                   "",
		"a=1&access_token=x&b=%20":         "a=1&b=%20",
		"acc%65ss_token=x&c":               "c",
		"access_token&x=1&access_token=2&": "x=1",
		"access_tokens=1":                  "access_tokens=1",
	}
	for in, want := range cases {
		if got := stripToken(in); got != want {
			t.Errorf("stripToken(%q) = %q, want %q", in, got, want)
		}
	}
}
