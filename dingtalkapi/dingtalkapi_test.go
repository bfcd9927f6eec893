package dingtalkapi

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestIsInvalidToken(t *testing.T) {
	tests := []struct {
		code, sub string
		want      bool
	}{
		{"40014", "", true}, {"42001", "", true}, {"40001", "", true},
		{"88", "40014", true}, {"88", "42001", true},
		{"InvalidAuthentication", "", true}, {"invalidauthentication", "", true},
		{"88", "", false}, {"88", "60011", false}, {"60011", "", false}, {"-1", "", false},
		{"40096", "", false}, {"Forbidden.AccessDenied.IpNotInWhiteList", "", false}, {"", "", false},
		{"40014", "60011", true}, // a sub_code only matters under errcode 88
	}
	for _, tt := range tests {
		if got := IsInvalidToken(tt.code, tt.sub); got != tt.want {
			t.Errorf("IsInvalidToken(%q, %q) = %v, want %v", tt.code, tt.sub, got, tt.want)
		}
	}
}

func TestParseCode(t *testing.T) {
	tests := []struct {
		raw  string
		want string
		ok   bool
	}{
		{``, "", true}, {`null`, "", true}, {`""`, "", true}, {`"  "`, "", true},
		{`40014`, "40014", true}, {`"40014"`, "40014", true}, {`" 040014 "`, "40014", true},
		{`40014.0`, "40014", true}, {`-1`, "-1", true}, {`"-1"`, "-1", true}, {`0`, "0", true},
		{`"InvalidAuthentication"`, "InvalidAuthentication", true},
		{`0.5`, "", false}, {`1e300`, "", false}, {`{"a":1}`, "", false}, {`[1]`, "", false}, {`true`, "", false},
	}
	for _, tt := range tests {
		got, ok := ParseCode(json.RawMessage(tt.raw))
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseCode(%s) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}

// TestParse covers the three parsers on the same answers. want is nil for a success; malformed
// means an error wrapping ErrMalformed.
func TestParse(t *testing.T) {
	type result struct {
		f         *Failure
		malformed bool
	}
	ok := result{}
	bad := result{malformed: true}
	fail := func(f Failure) result { return result{f: &f} }
	tests := []struct {
		name   string
		status int
		body   string
		legacy result // ParseLegacy(body)
		new    result // ParseNew(status, body)
		either result // Parse(status, body)
	}{
		{"legacy ok", 200, `{"errcode":0,"errmsg":"ok","access_token":"x"}`, ok, ok, ok},
		{"legacy ok string", 200, `{"errcode":"0"}`, ok, ok, ok},
		{"legacy invalid token", 200, `{"errcode":40014,"errmsg":"不合法的access_token"}`,
			fail(Failure{Code: "40014", Message: "不合法的access_token"}), ok,
			fail(Failure{Code: "40014", Message: "不合法的access_token", Status: 200})},
		{"topapi sub_code", 200, `{"errcode":88,"errmsg":"ding talk error","sub_code":"40014","sub_msg":"不合法"}`,
			fail(Failure{Code: "88", SubCode: "40014", Message: "ding talk error"}), ok,
			fail(Failure{Code: "88", SubCode: "40014", Message: "ding talk error", Status: 200})},
		{"legacy errcode on a 5xx", 500, `{"errcode":-1,"errmsg":"busy"}`,
			fail(Failure{Code: "-1", Message: "busy"}), bad, fail(Failure{Code: "-1", Message: "busy", Status: 500})},
		{"legacy bad errcode", 200, `{"errcode":{"a":1}}`, bad, ok, bad},
		{"legacy bad sub_code", 200, `{"errcode":88,"sub_code":[1]}`, fail(Failure{Code: "88"}), ok, fail(Failure{Code: "88", Status: 200})},
		{"new ok", 200, `{"accessToken":"x","expireIn":7200}`, bad, ok, ok},
		{"new ok array", 200, `[1,2]`, bad, ok, ok},
		{"new ok empty", 204, ``, bad, ok, ok},
		{"new invalid auth", 401, `{"code":"InvalidAuthentication","message":"m","requestid":"r1"}`, bad,
			fail(Failure{Code: "InvalidAuthentication", Message: "m", Status: 401, RequestID: "r1"}),
			fail(Failure{Code: "InvalidAuthentication", Message: "m", Status: 401, RequestID: "r1"})},
		{"new numeric code", 500, `{"code":500,"message":"m"}`, bad,
			fail(Failure{Code: "500", Message: "m", Status: 500}), fail(Failure{Code: "500", Message: "m", Status: 500})},
		{"new no code", 500, `{"message":"x"}`, bad, bad, bad},
		{"new bad code", 500, `{"code":{"x":1}}`, bad, bad, bad},
		{"html 502", 502, `<html><body>bad gateway</body></html>`, bad, bad, bad},
		{"punish json", 200, `{"status":1111,"punish":"deny"}`, bad, ok, ok},
	}
	check := func(t *testing.T, which string, f *Failure, err error, want result) {
		t.Helper()
		switch {
		case want.malformed:
			if !errors.Is(err, ErrMalformed) || f != nil {
				t.Errorf("%s: got %+v, %v; want ErrMalformed", which, f, err)
			}
		case want.f == nil:
			if err != nil || f != nil {
				t.Errorf("%s: got %+v, %v; want success", which, f, err)
			}
		default:
			if err != nil || f == nil || *f != *want.f {
				t.Errorf("%s: got %+v, %v; want %+v", which, f, err, *want.f)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseLegacy([]byte(tt.body))
			check(t, "ParseLegacy", f, err, tt.legacy)
			f, err = ParseNew(tt.status, []byte(tt.body))
			check(t, "ParseNew", f, err, tt.new)
			f, err = Parse(tt.status, []byte(tt.body))
			check(t, "Parse", f, err, tt.either)
		})
	}
}

func TestFailure(t *testing.T) {
	f := &Failure{Code: "88", SubCode: "40014", Message: "ding talk error"}
	if got := f.Error(); got != "dingtalk error 88/40014: ding talk error" {
		t.Errorf("Error() = %q", got)
	}
	if f.Cause() != "40014" || !f.InvalidToken() {
		t.Errorf("Cause() = %q, InvalidToken() = %v", f.Cause(), f.InvalidToken())
	}
	g := &Failure{Code: "InvalidAuthentication"}
	if g.Error() != "dingtalk error InvalidAuthentication" || g.Cause() != "InvalidAuthentication" || !g.InvalidToken() {
		t.Errorf("%q %q %v", g.Error(), g.Cause(), g.InvalidToken())
	}
	if h := (&Failure{Code: "88"}); h.Cause() != "88" || h.InvalidToken() {
		t.Errorf("88 without sub_code: %q %v", h.Cause(), h.InvalidToken())
	}
}

// FuzzParse checks that no answer makes a parser panic, that failures always carry a code and that
// errors are always ErrMalformed. Run with go test -run '^$' -fuzz '^FuzzParse$' ./dingtalkapi/.
func FuzzParse(f *testing.F) {
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, `{"errcode":0}`}, {200, `{"errcode":88,"sub_code":"40014"}`}, {401, `{"code":"InvalidAuthentication"}`},
		{502, `<html>x</html>`}, {200, `{"status":1111,"punish":"deny"}`}, {500, `{"code":5e300}`}, {204, ``},
	} {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		for name, p := range map[string]func() (*Failure, error){
			"legacy": func() (*Failure, error) { return ParseLegacy(body) },
			"new":    func() (*Failure, error) { return ParseNew(status, body) },
			"either": func() (*Failure, error) { return Parse(status, body) },
		} {
			fl, err := p()
			if err != nil && (!errors.Is(err, ErrMalformed) || fl != nil) {
				t.Fatalf("%s: %+v, %v", name, fl, err)
			}
			if fl != nil && fl.Code == "" {
				t.Fatalf("%s: failure without a code: %+v", name, fl)
			}
		}
	})
}
