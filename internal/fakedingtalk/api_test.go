package fakedingtalk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
)

// apiCall calls one of the API endpoints with value and returns the status and decoded body.
func (e *env) apiCall(t *testing.T, endpoint, value string, body []byte) (int, map[string]any) {
	t.Helper()
	var req *http.Request
	switch endpoint {
	case "topapi":
		req, _ = http.NewRequest("POST", e.url+"/topapi/v2/user/get?access_token="+value, strings.NewReader(`{"userid":"u1"}`))
	case "legacy":
		req, _ = http.NewRequest("GET", e.url+"/user/get?userid=u1&access_token="+value, nil)
	case "new":
		req, _ = http.NewRequest("GET", e.url+"/v1.0/contact/users/u1", nil)
		req.Header.Set(AccessTokenHeader, value)
	case "upload":
		req, _ = http.NewRequest("POST", e.url+"/media/upload?type=file&access_token="+value, bytes.NewReader(body))
	}
	resp, err := http.DefaultClient.Do(req.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return resp.StatusCode, map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, doc
}

func TestAPIEndpointsValidateTokens(t *testing.T) {
	e := setup(t, Options{TokenTTL: time.Hour})
	e.fake.AddApp("k", "s")
	app := dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}
	revoked := e.token(t, app).Value
	// A revoked value stops working, and the next fetch returns a new one.
	e.fake.Revoke(revoked)
	good := e.token(t, app).Value
	if good == revoked {
		t.Fatal("revocation did not rotate the token")
	}
	cases := []struct {
		endpoint string
		value    string
		status   int
		code     string // errcode / sub_code / code in the answer; "" for success
	}{
		{"topapi", good, 200, ""},
		{"topapi", revoked, 200, "88/40014"},
		{"topapi", "fake-at-unknown", 200, "88/40014"},
		{"legacy", good, 200, ""},
		{"legacy", revoked, 200, "40014"},
		{"legacy", "", 200, "41001"},
		{"new", good, 200, ""},
		{"new", revoked, 400, "InvalidAuthentication"},
		{"new", "", 400, "AuthenticationFailed.MissingParameter"},
		{"upload", revoked, 200, "40014"},
	}
	for _, c := range cases {
		status, doc := e.apiCall(t, c.endpoint, c.value, nil)
		code := ""
		switch {
		case doc["code"] != nil:
			code = doc["code"].(string)
		case doc["errcode"] != nil && doc["errcode"] != float64(0):
			code = jsonString(doc["errcode"])
			if doc["sub_code"] != nil {
				code += "/" + doc["sub_code"].(string)
			}
		}
		if status != c.status || code != c.code {
			t.Errorf("%s with %s token: %d %v, want %d %q", c.endpoint, map[bool]string{true: "valid", false: "bad"}[c.value == good], status, doc, c.status, c.code)
		}
	}
	if got := e.fake.Calls("k").API; got != 7 {
		t.Errorf("API calls of k: %d, want 7 (the unknown and missing tokens count under \"\")", got)
	}
	if got := len(e.fake.APICallTimes()); got != len(cases) {
		t.Errorf("%d API call times, want %d", got, len(cases))
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestUploadHashesTheBody(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	tok := e.token(t, dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}).Value
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := sha256.Sum256(body)
	status, doc := e.apiCall(t, "upload", tok, body)
	if status != 200 || doc["errcode"] != float64(0) || doc["size"] != float64(len(body)) || doc["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("upload answered %d %v", status, doc)
	}
}

func TestAPIEndpointsObeyFaultsAndBans(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	tok := e.token(t, dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}).Value

	e.fake.SetFault("k", Fault{Mode: FaultQPSLimit, Endpoint: EndpointAPI})
	if status, doc := e.apiCall(t, "new", tok, nil); status != 403 || doc["code"] != "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi" {
		t.Errorf("qps fault, new API: %d %v", status, doc)
	}
	if status, doc := e.apiCall(t, "legacy", tok, nil); status != 200 || doc["errcode"] != float64(90018) {
		t.Errorf("qps fault, legacy: %d %v", status, doc)
	}
	// The fault is limited to API calls: tokens are still issued.
	e.token(t, dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"})

	e.fake.SetFault("", Fault{Mode: FaultBanHTML})
	e.fake.SetFault("k", Fault{})
	if status, doc := e.apiCall(t, "topapi", tok, nil); status != 403 || !strings.Contains(doc["raw"].(string), "<html") {
		t.Errorf("ban: %d %v", status, doc)
	}
	e.fake.ClearFaults()

	banned := setup(t, Options{BanAfter: 2})
	banned.fake.AddApp("k", "s")
	tok = banned.token(t, dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}).Value
	banned.apiCall(t, "new", tok, nil)
	if status, _ := banned.apiCall(t, "new", tok, nil); status != 403 {
		t.Errorf("the third call within the window was not banned: %d", status)
	}
}

func TestAPIHangCountsAborted(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	tok := e.token(t, dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}).Value
	e.fake.SetFault("k", Fault{Mode: FaultHang, Endpoint: EndpointAPI})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1.0/contact/users/u1", nil)
		req.Header.Set(AccessTokenHeader, tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if err := e.fake.Wait(t.Context(), func() bool { return e.fake.Calls("k").API == 1 }); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if err := e.fake.Wait(t.Context(), func() bool { return e.fake.Calls("k").Aborted == 1 }); err != nil {
		t.Fatal(err)
	}
}
