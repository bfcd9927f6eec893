package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokend/tokend/client"
)

func TestTransport(t *testing.T) {
	type seen struct{ method, path, rawPath, query, auth, ua, body string }
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("User-Agent"), string(b)}
		w.Header().Set("Location", "https://elsewhere.example/")
		w.WriteHeader(http.StatusFound)
	}))
	defer srv.Close()
	tc, err := client.New(srv.URL+"/prefix", "tkd_key", nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := tc.HTTPClient("crm")
	cases := []struct {
		url  string
		want seen
	}{
		{"https://oapi.dingtalk.com/topapi/v2/user/get?lang=zh", seen{"POST", "/prefix/v1/apps/crm/proxy/oapi/topapi/v2/user/get", "/prefix/v1/apps/crm/proxy/oapi/topapi/v2/user/get", "lang=zh", "Bearer tkd_key", "tokend-client/" + client.Version, "{}"}},
		{"https://API.dingtalk.com/v1.0/contact/users/a%20b", seen{"POST", "/prefix/v1/apps/crm/proxy/api/v1.0/contact/users/a b", "/prefix/v1/apps/crm/proxy/api/v1.0/contact/users/a%20b", "", "Bearer tkd_key", "tokend-client/" + client.Version, "{}"}},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("POST", c.url, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer caller-would-send-this")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Errorf("%s: redirect followed (%d)", c.url, resp.StatusCode)
		}
		if s := <-got; s != c.want {
			t.Errorf("%s: tokend saw %+v, want %+v", c.url, s, c.want)
		}
	}
	_, err = hc.Get("https://evil.example/topapi/v2/user/get")
	if !errors.Is(err, client.ErrNotDingTalk) || strings.Contains(err.Error(), "tkd_key") {
		t.Errorf("request to another host: %v", err)
	}
	_, err = tc.HTTPClient("Bad App").Get("https://api.dingtalk.com/v1.0/x")
	if !errors.Is(err, client.ErrBadRequest) {
		t.Errorf("bad app name: %v", err)
	}
}
