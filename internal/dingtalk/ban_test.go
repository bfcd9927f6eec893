package dingtalk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pageCase is one answer of the corpus in testdata/pages: real-looking error pages of proxies and load
// balancers, and DingTalk's per-IP block page and punish JSON.
type pageCase struct {
	file   string
	status int
	ct     string
	code   string // the client's error code for it: CodeIPBan or "http_<status>"
}

var pageCases = []pageCase{
	{"nginx-502.html", 502, htmlCT, "http_502"},
	{"nginx-504.html", 504, "text/html", "http_504"},
	{"nginx-styled-502.html", 502, htmlCT, "http_502"},
	{"tengine-502.html", 502, htmlCT, "http_502"},
	{"tengine-503-zh.html", 503, htmlCT, "http_503"},
	{"alb-502.html", 502, "text/html", "http_502"},
	{"alb-503.html", 503, "text/html", "http_503"},
	{"cloudflare-502.html", 502, "text/html; charset=UTF-8", "http_502"},
	{"cloudflare-504.html", 504, "text/html; charset=UTF-8", "http_504"},
	{"squid-503.html", 503, "", "http_503"}, // no Content-Type: recognised as HTML by its first byte
	{"envoy-503.txt", 503, "text/plain", "http_503"},
	{"nginx-404.html", 404, "text/html", "http_404"},
	{"nginx-502.html", 502, jsonCT, "http_502"}, // a wrong Content-Type does not make it JSON
	{"dingtalk-ban.html", 403, htmlCT, CodeIPBan},
	{"dingtalk-ban.html", 200, htmlCT, CodeIPBan},
	{"dingtalk-ban.html", 503, htmlCT, CodeIPBan}, // the page's markers, whatever the status
	{"dingtalk-ban.html", 502, "", CodeIPBan},
	{"nginx-403.html", 403, "text/html", CodeIPBan}, // 403 HTML is how the block comes
	{"nginx-404.html", 429, "text/html", CodeIPBan},
	{"dingtalk-punish.json", 200, jsonCT, CodeIPBan},
	{"dingtalk-punish.json", 403, jsonCT, CodeIPBan},
	{"dingtalk-punish.json", 502, "", CodeIPBan},
}

func readPage(tb testing.TB, file string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pages", file))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestErrorPages pins what the client makes of each page of the corpus in both families: an error page
// of a proxy is a retryable "http_<status>", never the per-IP block that pauses every app.
func TestErrorPages(t *testing.T) {
	for _, pc := range pageCases {
		body := readPage(t, pc.file)
		for name, parse := range map[string]func(int, string, []byte, bool, field) (Grant, *Error){
			"legacy": parseLegacy, "new": parseNew,
		} {
			t.Run(pc.file+"/"+name+"/"+pc.code, func(t *testing.T) {
				_, e := parse(pc.status, pc.ct, body, false, tokenField)
				if e == nil {
					t.Fatal("got a grant")
				}
				wantClass := ClassUnavailable
				if pc.code == CodeIPBan {
					wantClass = ClassBanned
				}
				if e.Code != pc.code || e.Class != wantClass || e.Family != FamilyTransport || e.Status != pc.status {
					t.Fatalf("got {%s %d %s class %d}, want {transport %d %s class %d}", e.Family, e.Status, e.Code, e.Class, pc.status, pc.code, wantClass)
				}
				if !e.Retryable() {
					t.Fatal("not retryable")
				}
			})
		}
	}
}

// TestIsBanAgreesWithClient checks that IsBan, what the proxy uses, says what the client says.
func TestIsBanAgreesWithClient(t *testing.T) {
	for _, pc := range pageCases {
		body := readPage(t, pc.file)
		if got := IsBan(pc.status, pc.ct, body); got != (pc.code == CodeIPBan) {
			t.Errorf("%s at %d: IsBan = %v, want the client's %s", pc.file, pc.status, got, pc.code)
		}
	}
}

func TestIsBan(t *testing.T) {
	page502 := string(readPage(t, "nginx-styled-502.html"))
	ban := string(readPage(t, "dingtalk-ban.html"))
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
		want   bool
	}{
		{"css display:block on a 502", 502, htmlCT, page502, false},
		{"bare words on a 500", 500, htmlCT, "<html><body>blocked, forbidden, denied, deny, 拒绝, 禁止, 限制, 拦截</body></html>", false},
		{"punish json", 200, jsonCT, banJSON, true},
		{"punish member only", 405, jsonCT, `{"punish":"deny"}`, true},
		{"status 1111 string", 200, jsonCT, `{"status":"1111"}`, true},
		{"punish null", 200, jsonCT, `{"punish":null,"status":0}`, false},
		{"dingtalk json error", 403, jsonCT, `{"code":"Forbidden.AccessDenied.IpNotInWhiteList","message":"denied"}`, false},
		{"legacy json error", 200, jsonCT, `{"errcode":90002,"errmsg":"blocked"}`, false},
		{"ban page prefix", 503, htmlCT, ban[:strings.Index(ban, "</title>")], true},
		{"marker past the sniffed prefix", 502, htmlCT, "<html>" + strings.Repeat(" ", BanSniffBytes) + "访问被拒绝</html>", false},
		{"html 200 without markers", 200, "", "<html><body>hello</body></html>", true},
		{"html 401", 401, htmlCT, "<html><body>401 Authorization Required</body></html>", false},
		{"plain text 403", 403, "text/plain", "Forbidden", false},
		{"empty", 502, "", "", false},
		{"punish link in a 3xx page", 302, htmlCT, `<html><a href="https://oapi.dingtalk.com/punish?x5secdata=1">here</a></html>`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsBan(tt.status, tt.ct, []byte(tt.body)); got != tt.want {
				t.Fatalf("IsBan(%d, %q, …) = %v, want %v", tt.status, tt.ct, got, tt.want)
			}
		})
	}
}
