package fakedingtalk

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/callback"
	"github.com/tokend/tokend/internal/suite"
	"github.com/tokend/tokend/internal/token"
)

// isvPost posts a new-API JSON body.
func (e *env) isvPost(t *testing.T, path string, body any) rawResp {
	t.Helper()
	b, _ := json.Marshal(body)
	return do(t, newReq(t, "POST", e.url+path, "application/json", string(b)))
}

func (e *env) suiteToken(t *testing.T, key, secret, ticket string) rawResp {
	t.Helper()
	return e.isvPost(t, "/v1.0/oauth2/suiteAccessToken", map[string]string{"suiteKey": key, "suiteSecret": secret, "suiteTicket": ticket})
}

func (e *env) corpToken(t *testing.T, key, secret, corp, ticket string) rawResp {
	t.Helper()
	return e.isvPost(t, "/v1.0/oauth2/corpAccessToken", map[string]string{"suiteKey": key, "suiteSecret": secret, "authCorpId": corp, "suiteTicket": ticket})
}

func okToken(t *testing.T, r rawResp) string {
	t.Helper()
	v, _ := r.body["accessToken"].(string)
	if r.status != 200 || v == "" || r.body["expireIn"] != float64(7200) {
		t.Fatalf("got %d %s, want a token", r.status, r.text)
	}
	return v
}

func mint(t *testing.T, f *Server, key string) string {
	t.Helper()
	v, _, err := f.MintSuiteTicket(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSuiteToken(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("suite1", "sec", false)
	assertNew(t, e.suiteToken(t, "suite1", "sec", ""), 400, CodeInvalidSuiteTicket)
	assertNew(t, e.suiteToken(t, "suite1", "sec", "made-up"), 400, CodeInvalidSuiteTicket)
	tk := mint(t, e.fake, "suite1")
	if !strings.HasPrefix(tk, SuiteTicketPrefix) {
		t.Fatalf("ticket %q", tk)
	}
	assertNew(t, e.suiteToken(t, "suite1", "wrong", tk), 400, "invalidClientIdOrSecret")
	assertNew(t, e.suiteToken(t, "nosuch", "sec", tk), 400, "invalidClientIdOrSecret")
	a := okToken(t, e.suiteToken(t, "suite1", "sec", tk))
	e.clock.Advance(time.Hour)
	if b := okToken(t, e.suiteToken(t, "suite1", "sec", tk)); b != a {
		t.Fatal("the suite token was not renewed while valid")
	}
	is := e.fake.ISVIssued()
	if len(is) != 1 || is[0].Kind != KindSuiteToken || !is[0].ExpiresAt.Equal(t0.Add(time.Hour+7200*time.Second)) {
		t.Fatalf("issued %+v", is)
	}
	if c := e.fake.ISVCalls("suite1", ""); c.Token != 5 {
		// The call for "nosuch" counts under its own key.
		t.Fatalf("calls %+v", c)
	}
	// A missing body is the gateway's Missingbody.
	assertNew(t, do(t, newReq(t, "POST", e.url+"/v1.0/oauth2/suiteAccessToken", "application/x-www-form-urlencoded", "suiteKey=suite1")), 400, "Missingbody")
}

func TestSuiteTicketGrace(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	e.fake.AuthorizeCorp("s", "corpa")
	t1 := mint(t, e.fake, "s")
	t2 := mint(t, e.fake, "s")
	okToken(t, e.corpToken(t, "s", "sec", "corpa", t1)) // the previous one, within the minute
	e.clock.Advance(SuiteTicketGrace - time.Millisecond)
	okToken(t, e.corpToken(t, "s", "sec", "corpa", t1))
	e.clock.Advance(time.Millisecond)
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", t1), 400, CodeInvalidSuiteTicket)
	okToken(t, e.corpToken(t, "s", "sec", "corpa", t2))
	// Only the previous one: the one before it is dead at once.
	t3 := mint(t, e.fake, "s")
	_ = t3
	mint(t, e.fake, "s")
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", t2), 400, CodeInvalidSuiteTicket)
}

func TestCustomSuiteAcceptsAnyTicket(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("custom", "sec", true)
	e.fake.AuthorizeCorp("custom", "corpa")
	okToken(t, e.suiteToken(t, "custom", "sec", "anything"))
	okToken(t, e.corpToken(t, "custom", "sec", "corpa", ""))
	assertNew(t, e.corpToken(t, "custom", "bad", "corpa", "x"), 400, "invalidClientIdOrSecret")
}

func TestCorpTokenRotates(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	tk := mint(t, e.fake, "s")
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", tk), 400, CodeInvalidAuthCorpID)
	e.fake.AuthorizeCorp("s", "corpa")
	e.fake.AuthorizeCorp("s", "corpb")
	a1 := okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
	b1 := okToken(t, e.corpToken(t, "s", "sec", "corpb", tk))
	e.clock.Advance(time.Second)
	a2 := okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
	if a2 == a1 || !strings.HasPrefix(a2, CorpTokenPrefix) {
		t.Fatalf("a fetch inside the validity window returned %q after %q; want a new token", a2, a1)
	}
	now := e.clock.Now()
	if e.fake.ISVValid(token.AccessToken, a1, now) {
		t.Fatal("the previous corp token still works after a new fetch")
	}
	if !e.fake.ISVValid(token.AccessToken, a1, now.Add(-time.Millisecond)) {
		t.Fatal("the previous corp token did not work before the new fetch")
	}
	if !e.fake.ISVValid(token.AccessToken, a2, now) || !e.fake.ISVValid(token.AccessToken, b1, now) {
		t.Fatal("the new token, or another corp's, does not work")
	}
	var rotated ISVIssued
	for _, i := range e.fake.ISVIssued() {
		if i.Value == a1 {
			rotated = i
		}
	}
	if rotated.EndReason != EndRotated || !rotated.EndedAt.Equal(now) || rotated.Corp != "corpa" || rotated.Suite != "s" {
		t.Fatalf("rotated record %+v", rotated)
	}
	if c := e.fake.ISVCalls("s", "corpa"); c.Token != 3 {
		t.Fatalf("corpa calls %+v, want 3 token calls", c)
	}

	// Relief: the token dies at once and the corp is refused until it authorizes again.
	e.fake.RelieveCorp("s", "corpa")
	if e.fake.ISVValid(token.AccessToken, a2, e.clock.Now()) {
		t.Fatal("a relieved corp's token still works")
	}
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", tk), 400, CodeInvalidAuthCorpID)
	e.fake.AuthorizeCorp("s", "corpa")
	okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
	if !e.fake.RevokeISV(b1) || e.fake.RevokeISV(b1) || e.fake.ISVValid(token.AccessToken, b1, e.clock.Now()) {
		t.Fatal("RevokeISV")
	}
}

func TestCorpJSAPITicket(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	e.fake.AuthorizeCorp("s", "corpa")
	e.fake.AddApp("internal", "sec") // the internal apps' path still works beside it
	tk := mint(t, e.fake, "s")
	a1 := okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
	get := func(tok string) rawResp {
		return do(t, newReq(t, "GET", e.url+"/get_jsapi_ticket?access_token="+tok, "", ""))
	}
	r := get(a1)
	j1, _ := r.body["ticket"].(string)
	if r.status != 200 || r.body["errcode"] != float64(0) || !strings.HasPrefix(j1, TicketPrefix) {
		t.Fatalf("ticket: %d %s", r.status, r.text)
	}
	a2 := okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
	assertLegacy(t, get(a1), 40014) // rotated away
	if j2, _ := get(a2).body["ticket"].(string); j2 != j1 {
		t.Fatal("the corp's ticket changed with its token; it is renewed while valid")
	}
	if !e.fake.ISVValid(token.JSAPITicket, j1, e.clock.Now()) {
		t.Fatal("ISVValid(ticket)")
	}
	e.clock.Advance(7200 * time.Second)
	assertLegacy(t, get(a2), 42001) // expired
	if c := e.fake.ISVCalls("s", "corpa"); c.Ticket != 4 {
		t.Fatalf("ticket calls %+v, want 4", c)
	}
	it := e.token(t, flavours[0].app("internal", "sec")).Value
	if r := get(it); r.body["errcode"] != float64(0) {
		t.Fatalf("internal app's ticket: %s", r.text)
	}
}

func TestISVFaultsAndBan(t *testing.T) {
	e := setup(t, Options{BanAfter: 8})
	e.fake.AddSuite("s", "sec", false)
	e.fake.AuthorizeCorp("s", "corpa")
	e.fake.AuthorizeCorp("s", "corpb")
	tk := mint(t, e.fake, "s")
	e.fake.SetFault("corpa", Fault{Mode: FaultBusy})
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", tk), 503, "systemBusy")
	okToken(t, e.corpToken(t, "s", "sec", "corpb", tk))
	okToken(t, e.suiteToken(t, "s", "sec", tk))
	e.fake.SetFault("s", Fault{Mode: FaultIPNotAllowed, Endpoint: EndpointToken})
	assertNew(t, e.suiteToken(t, "s", "sec", tk), 403, "Forbidden.AccessDenied.IpNotInWhiteList")
	assertNew(t, e.corpToken(t, "s", "sec", "corpb", tk), 403, "Forbidden.AccessDenied.IpNotInWhiteList")
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", tk), 503, "systemBusy") // the corp's own fault first
	e.fake.ClearFaults()
	for range 2 {
		okToken(t, e.corpToken(t, "s", "sec", "corpb", tk))
	}
	if r := e.corpToken(t, "s", "sec", "corpb", tk); r.status != 403 || !strings.Contains(r.text, "访问被拒绝") {
		t.Fatalf("the 9th call in the ban window: %d %s", r.status, r.text)
	}
	if got := e.fake.TotalCalls(); got != 9 {
		t.Fatalf("TotalCalls %d, want 9", got)
	}
}

// recSink records the events a suite.Handler passes on.
type recSink struct {
	mu      sync.Mutex
	tickets []string
	at      []time.Time
	corps   []string
}

func (s *recSink) SuiteTicket(_ context.Context, _, ticket string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickets, s.at = append(s.tickets, ticket), append(s.at, at)
	return nil
}
func (s *recSink) CorpAuthorized(_ context.Context, _, corp string, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corps = append(s.corps, "+"+corp)
	return nil
}
func (s *recSink) CorpRelieved(_ context.Context, _, corp string, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corps = append(s.corps, "-"+corp)
	return nil
}

const (
	cbToken = "cbtoken"
	cbKey   = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus"
)

func TestPushEvent(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	c, err := callback.New(cbToken, cbKey, "s")
	if err != nil {
		t.Fatal(err)
	}
	sink := &recSink{}
	mux := http.NewServeMux()
	mux.Handle("POST /callbacks/{app}", suite.NewHandler(suite.Options{Apps: map[string]suite.Crypto{"saas": c}, Sink: sink}))
	recv := httptest.NewServer(mux)
	t.Cleanup(recv.Close)

	if _, err := e.fake.PushEvent(t.Context(), "s", ISVEvent{Type: EventCheckURL}); err == nil {
		t.Fatal("push without a callback set")
	}
	// Through the control API, as an e2e test would.
	r := do(t, newReq(t, "PUT", e.url+"/_fake/isv/suites/s/callback", "application/json",
		fmt.Sprintf(`{"url":%q,"token":%q,"aes_key":%q}`, recv.URL+"/callbacks/saas", cbToken, cbKey)))
	if r.status != 204 {
		t.Fatalf("set callback: %d %s", r.status, r.text)
	}
	for _, typ := range []string{EventCheckURL, EventCheckCreateSuiteURL, EventCheckUpdateSuiteURL} {
		res, err := e.fake.PushEvent(t.Context(), "s", ISVEvent{Type: typ})
		if err != nil || !res.OK || res.Status != 200 {
			t.Fatalf("%s: %+v, %v", typ, res, err)
		}
	}
	r = do(t, newReq(t, "POST", e.url+"/_fake/isv/suites/s/push", "application/json", `{"event":"suite_ticket"}`))
	var res PushResult
	json.Unmarshal([]byte(r.text), &res)
	if r.status != 200 || !res.OK || res.SuiteTicket == "" {
		t.Fatalf("suite_ticket push: %d %s", r.status, r.text)
	}
	// An older ticket pushed late, explicitly.
	old := ISVEvent{Type: EventSuiteTicket, SuiteTicket: "older", PushedAt: t0.Add(-time.Hour)}
	if res2, err := e.fake.PushEvent(t.Context(), "s", old); err != nil || !res2.OK {
		t.Fatalf("older push: %+v %v", res2, err)
	}
	if res3, err := e.fake.PushEvent(t.Context(), "s", ISVEvent{Type: EventTmpAuthCode, Corp: "corpa"}); err != nil || !res3.OK {
		t.Fatalf("tmp_auth_code: %+v %v", res3, err)
	}
	okToken(t, e.corpToken(t, "s", "sec", "corpa", res.SuiteTicket)) // the push authorized the corp
	if res4, err := e.fake.PushEvent(t.Context(), "s", ISVEvent{Type: EventSuiteRelieve, Corp: "corpa"}); err != nil || !res4.OK {
		t.Fatalf("suite_relieve: %+v %v", res4, err)
	}
	assertNew(t, e.corpToken(t, "s", "sec", "corpa", res.SuiteTicket), 400, CodeInvalidAuthCorpID)

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if fmt.Sprint(sink.tickets) != fmt.Sprint([]string{res.SuiteTicket, "older"}) || !sink.at[0].Equal(t0) || !sink.at[1].Equal(t0.Add(-time.Hour)) {
		t.Fatalf("receiver got tickets %d at %v", len(sink.tickets), sink.at)
	}
	if fmt.Sprint(sink.corps) != "[+corpa -corpa]" {
		t.Fatalf("receiver got corps %v", sink.corps)
	}

	// A receiver with the wrong key answers 403: the push reports it.
	e.fake.SetCallback("s", recv.URL+"/callbacks/saas", "othertoken", cbKey)
	if res, err := e.fake.PushEvent(t.Context(), "s", ISVEvent{Type: EventCheckURL}); err != nil || res.OK || res.Status != 403 {
		t.Fatalf("push with a wrong token: %+v %v", res, err)
	}
}

func TestISVControlAPI(t *testing.T) {
	e := setup(t, Options{})
	post := func(path, body string) rawResp {
		return do(t, newReq(t, "POST", e.url+path, "application/json", body))
	}
	if r := post("/_fake/isv/suites", `{"key":"s","secret":"sec"}`); r.status != 204 {
		t.Fatalf("add suite: %d %s", r.status, r.text)
	}
	if r := post("/_fake/isv/suites", `{"key":"s"}`); r.status != 400 {
		t.Fatalf("add suite without secret: %d", r.status)
	}
	if r := post("/_fake/isv/suites/nosuch/tickets", ``); r.status != 404 {
		t.Fatalf("ticket of an unknown suite: %d", r.status)
	}
	r := post("/_fake/isv/suites/s/tickets", ``)
	tk, _ := r.body["suite_ticket"].(string)
	if r.status != 200 || tk == "" {
		t.Fatalf("mint: %d %s", r.status, r.text)
	}
	if r := post("/_fake/isv/suites/s/corps/corpa/authorize", ``); r.status != 204 {
		t.Fatalf("authorize: %d", r.status)
	}
	ct := okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
	if r := post("/_fake/isv/valid", `{"kind":"access_token","value":"`+ct+`"}`); r.body["valid"] != true {
		t.Fatalf("valid: %s", r.text)
	}
	var issued []ISVIssued
	json.Unmarshal([]byte(do(t, newReq(t, "GET", e.url+"/_fake/isv/issued", "", "")).text), &issued)
	if len(issued) != 1 || issued[0].Value != ct || issued[0].Corp != "corpa" {
		t.Fatalf("issued %+v", issued)
	}
	var calls map[string]map[string]ISVCounts
	json.Unmarshal([]byte(do(t, newReq(t, "GET", e.url+"/_fake/isv/calls", "", "")).text), &calls)
	if calls["s"]["corpa"].Token != 1 {
		t.Fatalf("calls %+v", calls)
	}
	if r := post("/_fake/isv/suites/s/corps/corpa/relieve", ``); r.status != 204 {
		t.Fatalf("relieve: %d", r.status)
	}
	if r := post("/_fake/isv/revoke", `{"value":"`+ct+`"}`); r.body["revoked"] != false {
		t.Fatalf("revoke of a relieved token: %s", r.text)
	}
}

func TestISVLogsHaveNoSecrets(t *testing.T) {
	var buf syncBuffer
	e := setup(t, Options{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.fake.AddSuite("s", "SUITE-SECRET-x81", false)
	e.fake.AuthorizeCorp("s", "corpa")
	tk := mint(t, e.fake, "s")
	st := okToken(t, e.suiteToken(t, "s", "SUITE-SECRET-x81", tk))
	ct := okToken(t, e.corpToken(t, "s", "SUITE-SECRET-x81", "corpa", tk))
	out := buf.String()
	for _, s := range []string{"SUITE-SECRET-x81", tk, st, ct} {
		if strings.Contains(out, s) {
			t.Fatal("log contains a secret, ticket or token")
		}
	}
	if !strings.Contains(out, token.Fingerprint(ct)) {
		t.Fatal("log does not identify values by fingerprint")
	}
}

// TestConcurrentCorpFetches: concurrent fetches of one corp each get a new token, and only the last
// one issued still works: what a broker must never let happen.
func TestConcurrentCorpFetches(t *testing.T) {
	e := setup(t, Options{})
	e.fake.AddSuite("s", "sec", false)
	e.fake.AuthorizeCorp("s", "corpa")
	tk := mint(t, e.fake, "s")
	const n = 20
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = okToken(t, e.corpToken(t, "s", "sec", "corpa", tk))
		}()
	}
	wg.Wait()
	issued := e.fake.ISVIssued()
	if len(issued) != n {
		t.Fatalf("%d values issued for %d fetches", len(issued), n)
	}
	valid := 0
	for _, v := range got {
		if e.fake.ISVValid(token.AccessToken, v, e.clock.Now()) {
			valid++
		}
	}
	last := issued[n-1]
	if valid != 1 || !e.fake.ISVValid(token.AccessToken, last.Value, e.clock.Now()) {
		t.Fatalf("%d of %d tokens still work; want only the last issued", valid, n)
	}
	for _, i := range issued[:n-1] {
		if i.EndReason != EndRotated {
			t.Fatalf("an earlier token ended %q", i.EndReason)
		}
	}
}
