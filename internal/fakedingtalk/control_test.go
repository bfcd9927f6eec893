package fakedingtalk

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

func TestControlAPI(t *testing.T) {
	e := setup(t, Options{})
	u := e.url + "/_fake"
	ctl := func(method, path, body string) rawResp {
		t.Helper()
		ct := ""
		if body != "" {
			ct = "application/json"
		}
		return do(t, newReq(t, method, u+path, ct, body))
	}
	wantStatus := func(r rawResp, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("got %d %s, want %d", r.status, r.text, status)
		}
		if status == 400 && r.body["error"] == "" {
			t.Fatalf("400 without an error member: %s", r.text)
		}
	}

	wantStatus(ctl("GET", "/healthz", ""), 200)
	wantStatus(ctl("GET", "/nosuch", ""), 404)

	// Apps.
	wantStatus(ctl("POST", "/apps", `{"key":"k","secret":"s"}`), 204)
	wantStatus(ctl("POST", "/apps", `{"key":"c","secret":"s","corp":true}`), 204)
	wantStatus(ctl("POST", "/apps", `{"key":"k"}`), 400)
	wantStatus(ctl("POST", "/apps", `{"key":"k","secret":"s","extra":1}`), 400)
	wantStatus(ctl("POST", "/apps", `{"key":"k","secret":"s"} {}`), 400)
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	corp := dingtalk.App{Type: dingtalk.Corp, Key: "c", Secret: "s"}
	tok := e.token(t, app).Value
	e.token(t, corp)

	// Faults.
	wantStatus(ctl("PUT", "/faults/k", `{"mode":"busy","latency":"1ms","endpoint":"token"}`), 204)
	_, err := e.client.AccessToken(t.Context(), app)
	dtErr(t, err, "systemBusy", dingtalk.ClassUnavailable)
	e.ticket(t, dingtalk.V1, tok) // endpoint "token" only
	wantStatus(ctl("PUT", "/faults/_all", `{"mode":"ban_json"}`), 204)
	_, err = e.client.AccessToken(t.Context(), corp)
	dtErr(t, err, "ip_ban", dingtalk.ClassBanned)
	wantStatus(ctl("DELETE", "/faults/k", ""), 204)
	_, err = e.client.AccessToken(t.Context(), app)
	dtErr(t, err, "ip_ban", dingtalk.ClassBanned) // only the global fault is left
	wantStatus(ctl("DELETE", "/faults", ""), 204)
	e.token(t, app)
	for _, bad := range []string{`{"mode":"sleepy"}`, `{"mode":"busy","endpoint":"both"}`, `{"latency":"soon"}`, `{"latency":"-1s"}`, `{"mode":3}`} {
		wantStatus(ctl("PUT", "/faults/k", bad), 400)
	}
	if _, err := e.client.AccessToken(t.Context(), app); err != nil {
		t.Fatalf("a rejected fault was applied: %v", err)
	}

	// Calls.
	var calls struct {
		Total int               `json:"total"`
		Apps  map[string]Counts `json:"apps"`
	}
	r := ctl("GET", "/calls", "")
	wantStatus(r, 200)
	if err := json.Unmarshal([]byte(r.text), &calls); err != nil {
		t.Fatal(err)
	}
	if calls.Total != e.fake.TotalCalls() || calls.Apps["k"] != e.fake.Calls("k") || calls.Apps["c"] != e.fake.Calls("c") || calls.Total != 8 {
		t.Fatalf("/calls %+v disagrees with the fake (total %d)", calls, e.fake.TotalCalls())
	}

	// Issued, revoke, valid.
	e.clock.Advance(time.Minute)
	checkIssued := func(wantRevoked int) {
		t.Helper()
		r := ctl("GET", "/issued", "")
		wantStatus(r, 200)
		var got []Issued
		if err := json.Unmarshal([]byte(r.text), &got); err != nil {
			t.Fatal(err)
		}
		want := e.fake.Issued()
		if len(got) != len(want) || len(got) != 3 {
			t.Fatalf("/issued has %d values, the fake %d, want 3", len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.App != w.App || g.Kind != w.Kind || g.Value != w.Value || !g.IssuedAt.Equal(w.IssuedAt) ||
				!g.ExpiresAt.Equal(w.ExpiresAt) || !g.RevokedAt.Equal(w.RevokedAt) {
				t.Fatalf("/issued[%d] = %+v, want %+v", i, g, w)
			}
		}
		if n := strings.Count(r.text, `"revoked_at"`); n != wantRevoked {
			t.Fatalf("/issued shows %d revoked_at members, want %d: %s", n, wantRevoked, r.text)
		}
		if !strings.Contains(r.text, `"issued_at":"2026-11-22T08:00:00Z"`) {
			t.Fatalf("/issued times not RFC 3339: %s", r.text)
		}
	}
	checkIssued(0)
	revokeBody := `{"value":"` + tok + `"}`
	r = ctl("POST", "/revoke", revokeBody)
	if r.status != 200 || r.body["revoked"] != true {
		t.Fatalf("revoke: %d %s", r.status, r.text)
	}
	if r = ctl("POST", "/revoke", revokeBody); r.body["revoked"] != false {
		t.Fatalf("second revoke: %s", r.text)
	}
	checkIssued(1)
	e.clock.Advance(time.Second)
	valid := func(kind, value, at string) bool {
		t.Helper()
		b, _ := json.Marshal(map[string]string{"kind": kind, "value": value, "at": at})
		if at == "" {
			b, _ = json.Marshal(map[string]string{"kind": kind, "value": value})
		}
		r := ctl("POST", "/valid", string(b))
		wantStatus(r, 200)
		v, ok := r.body["valid"].(bool)
		if !ok {
			t.Fatalf("/valid answered %s", r.text)
		}
		return v
	}
	if !valid("access_token", tok, t0.Add(30*time.Second).Format(time.RFC3339Nano)) {
		t.Fatal("/valid: token not valid before its revocation")
	}
	if valid("access_token", tok, "") {
		t.Fatal("/valid: revoked token valid now")
	}
	if valid("jsapi_ticket", tok, t0.Format(time.RFC3339)) {
		t.Fatal("/valid: a token is valid as a ticket")
	}
	if !e.fake.Valid(token.AccessToken, tok, t0) {
		t.Fatal("Valid and /valid disagree")
	}
	wantStatus(ctl("POST", "/valid", `{"kind":"password","value":"x"}`), 400)
	wantStatus(ctl("POST", "/valid", `{"kind":"access_token","value":"x","at":"yesterday"}`), 400)

	// Methods matter: a wrong one is an unknown control route, never a DingTalk answer.
	if r := do(t, newReq(t, "GET", u+"/apps", "", "")); r.status != http.StatusNotFound || r.body["error"] == nil {
		t.Fatalf("GET /_fake/apps: %d %s", r.status, r.text)
	}
}

func TestFaultJSON(t *testing.T) {
	for m := FaultNone; m <= FaultErrorPage; m++ {
		t.Run(m.String(), func(t *testing.T) {
			if strings.ToLower(m.String()) != m.String() || strings.Contains(m.String(), "(") {
				t.Fatalf("mode name %q is not snake case", m.String())
			}
			in := Fault{Mode: m, Latency: 1500 * time.Millisecond, Endpoint: EndpointTicket}
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"mode":"`+m.String()+`"`) || !strings.Contains(string(b), `"latency":"1.5s"`) {
				t.Fatalf("marshalled %s", b)
			}
			var out Fault
			if err := json.Unmarshal(b, &out); err != nil || out != in {
				t.Fatalf("round trip gave %+v, %v", out, err)
			}
			if p, err := ParseFaultMode(m.String()); err != nil || p != m {
				t.Fatalf("ParseFaultMode(%q) = %v, %v", m.String(), p, err)
			}
		})
	}
	var f Fault
	if err := json.Unmarshal([]byte(`{}`), &f); err != nil || f != (Fault{}) {
		t.Fatalf("empty fault: %+v %v", f, err)
	}
	if _, err := ParseFaultMode("nope"); err == nil {
		t.Fatal("unknown mode parsed")
	}
	if _, err := json.Marshal(Fault{Mode: FaultErrorPage + 1}); err == nil {
		t.Fatal("unknown mode marshalled")
	}
	want := map[FaultMode]string{FaultBadCredentials: "bad_credentials", FaultIPNotAllowed: "ip_not_allowed", FaultQPSLimit: "qps_limit",
		FaultGlobalQPS: "global_qps", FaultServerError: "server_error", FaultBanHTML: "ban_html", FaultBanJSON: "ban_json", FaultBadExpiry: "bad_expiry", FaultErrorPage: "error_page"}
	for m, name := range want {
		if m.String() != name {
			t.Errorf("%d named %q, want %q", int(m), m.String(), name)
		}
	}
}

func TestControlCallsLongPoll(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddApp("k", "s")
	app := dingtalk.App{Type: dingtalk.Internal, Key: "k", Secret: "s"}
	got := make(chan rawResp, 1)
	go func() { got <- do(t, newReq(t, "GET", e.url+"/_fake/calls?min_total=2", "", "")) }()
	e.token(t, app)
	e.token(t, app)
	if r := <-got; r.status != 200 || r.body["total"] != 2.0 {
		t.Fatalf("long poll answered %d %s", r.status, r.text)
	}
	if r := do(t, newReq(t, "GET", e.url+"/_fake/calls?min_total=3&timeout=10ms", "", "")); r.status != http.StatusRequestTimeout {
		t.Fatalf("unmet long poll answered %d %s", r.status, r.text)
	}
	go func() { got <- do(t, newReq(t, "GET", e.url+"/_fake/calls?min_total=99", "", "")) }()
	e.fake.Close()
	if r := <-got; r.status != http.StatusRequestTimeout {
		t.Fatalf("long poll after Close answered %d %s", r.status, r.text)
	}
	for _, q := range []string{"min_total=x", "min_total=-1", "min_total=1&timeout=0s"} {
		if r := do(t, newReq(t, "GET", e.url+"/_fake/calls?"+q, "", "")); r.status != 400 {
			t.Fatalf("%s answered %d", q, r.status)
		}
	}
}
