package dingtalk

import (
	"testing"
	"time"
)

// FuzzParse checks the parsers' invariants on arbitrary answers: no panic; a grant always has a value
// and a sane lifetime; an error always has a code and a known class. Run with
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
	}
	for _, s := range seeds {
		for _, ticket := range []bool{false, true} {
			f.Add(s.status, s.ct, []byte(s.body), false, ticket)
		}
	}
	f.Fuzz(func(t *testing.T, status int, ct string, body []byte, truncated, ticket bool) {
		fld := tokenField
		if ticket {
			fld = ticketField
		}
		for name, parse := range map[string]func(int, string, []byte, bool, field) (Grant, *Error){
			"legacy": parseLegacy, "new": parseNew,
		} {
			g, e := parse(status, ct, body, truncated, fld)
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
