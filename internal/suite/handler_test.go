package suite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/callback"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/suite"
)

const (
	cbToken  = "tokenxxxx"
	cbKey    = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus"
	suiteKey = "suitetest"
)

// storeSink keeps tickets in a real store (newest push wins) and records corp changes.
type storeSink struct {
	st  *store.Memory
	err error // returned by every method when set

	mu      sync.Mutex
	calls   []string
	tickets int
	corpAt  []int64 // push times of corp events, ms
}

func (s *storeSink) SuiteTicket(ctx context.Context, app, ticket string, at time.Time) error {
	if s.err != nil {
		return s.err
	}
	s.mu.Lock()
	s.tickets++
	s.calls = append(s.calls, "ticket:"+app)
	s.mu.Unlock()
	_, _, err := s.st.PutSuiteTicket(ctx, app, store.SuiteTicket{Value: ticket, PushedAt: at})
	return err
}

func (s *storeSink) CorpAuthorized(_ context.Context, app, corp string, at time.Time) error {
	if s.err != nil {
		return s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corpAt = append(s.corpAt, at.UnixMilli())
	s.calls = append(s.calls, "authorized:"+app+":"+corp)
	return nil
}

func (s *storeSink) CorpRelieved(_ context.Context, app, corp string, at time.Time) error {
	if s.err != nil {
		return s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corpAt = append(s.corpAt, at.UnixMilli())
	s.calls = append(s.calls, "relieved:"+app+":"+corp)
	return nil
}

func (s *storeSink) recorded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

type fixture struct {
	srv  *httptest.Server
	c    *callback.Crypto
	sink *storeSink
	logs *bytes.Buffer
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c, err := callback.New(cbToken, cbKey, suiteKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{c: c, sink: &storeSink{st: store.NewMemory(store.MemoryOptions{})}, logs: &bytes.Buffer{},
		now: time.UnixMilli(1_763_800_000_000)}
	var logMu sync.Mutex
	h := suite.NewHandler(suite.Options{
		Apps:   map[string]suite.Crypto{"saas": c},
		Sink:   f.sink,
		Now:    func() time.Time { return f.now },
		Logger: slog.New(slog.NewJSONHandler(&lockedWriter{mu: &logMu, w: f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	mux := http.NewServeMux()
	mux.Handle("POST /callbacks/{app}", h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// push seals event as DingTalk would and posts it; it returns the status and body.
func (f *fixture) push(t *testing.T, app string, event any, spell bool) (int, []byte) {
	t.Helper()
	msg, err := json.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.c.Seal(msg, "1763800000123", "nonce123", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"msg_signature": {r.MsgSignature}, "timestamp": {r.TimeStamp}, "nonce": {r.Nonce}}
	if spell {
		q = url.Values{"signature": {r.MsgSignature}, "timeStamp": {r.TimeStamp}, "nonce": {r.Nonce}}
	}
	return f.post(t, app, q, fmt.Sprintf(`{"encrypt":%q}`, r.Encrypt))
}

func (f *fixture) post(t *testing.T, app string, q url.Values, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(f.srv.URL+"/callbacks/"+app+"?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// answer opens a 200 answer and returns its plaintext.
func (f *fixture) answer(t *testing.T, body []byte) string {
	t.Helper()
	var r callback.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	if r.TimeStamp != "1763800000000" {
		t.Fatalf("answer timeStamp %q, want the handler's clock in ms", r.TimeStamp)
	}
	msg, err := f.c.Open(r.MsgSignature, r.TimeStamp, r.Nonce, r.Encrypt)
	if err != nil {
		t.Fatalf("answer does not open: %v", err)
	}
	return string(msg)
}

func TestEvents(t *testing.T) {
	cases := []struct {
		name   string
		event  map[string]any
		spell  bool
		answer string
		calls  []string
	}{
		{"check_url", map[string]any{"EventType": "check_url"}, false, "success", nil},
		{"check_create_suite_url answers Random", map[string]any{"EventType": "check_create_suite_url", "Random": "r4nd0m", "TestSuiteKey": "x"}, false, "r4nd0m", nil},
		{"check_update_suite_url answers Random", map[string]any{"EventType": "check_update_suite_url", "Random": "abc"}, true, "abc", nil},
		{"check_update_suite_url without Random", map[string]any{"EventType": "check_update_suite_url"}, false, "success", nil},
		{"suite_ticket", map[string]any{"EventType": "suite_ticket", "SuiteKey": suiteKey, "SuiteTicket": "tk1", "TimeStamp": "1763800000001"}, false, "success", []string{"ticket:saas"}},
		{"suite_ticket numeric TimeStamp, other spelling", map[string]any{"EventType": "suite_ticket", "SuiteTicket": "tk1", "TimeStamp": 1763800000001}, true, "success", []string{"ticket:saas"}},
		{"tmp_auth_code", map[string]any{"EventType": "tmp_auth_code", "AuthCode": "secret-code", "AuthCorpId": "dingcorpa", "TimeStamp": "1"}, false, "success", []string{"authorized:saas:dingcorpa"}},
		{"suite_relieve", map[string]any{"EventType": "suite_relieve", "AuthCorpId": "dingcorpa"}, false, "success", []string{"relieved:saas:dingcorpa"}},
		{"unknown event answered, not used", map[string]any{"EventType": "org_micro_app_stop", "AuthCorpId": "x"}, false, "success", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			status, body := f.push(t, "saas", tc.event, tc.spell)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			if got := f.answer(t, body); got != tc.answer {
				t.Fatalf("answer %q, want %q", got, tc.answer)
			}
			if got := f.sink.recorded(); fmt.Sprint(got) != fmt.Sprint(tc.calls) {
				t.Fatalf("sink calls %v, want %v", got, tc.calls)
			}
			if strings.Contains(f.logs.String(), "tk1") || strings.Contains(f.logs.String(), "secret-code") {
				t.Fatalf("logs carry a ticket or code: %s", f.logs)
			}
		})
	}
}

func TestTicketOrderingAndRepeats(t *testing.T) {
	f := newFixture(t)
	push := func(v, ts string) {
		t.Helper()
		status, body := f.push(t, "saas", map[string]any{"EventType": "suite_ticket", "SuiteTicket": v, "TimeStamp": ts}, false)
		if status != http.StatusOK || f.answer(t, body) != "success" {
			t.Fatalf("push %s: %d %s", v, status, body)
		}
	}
	push("new", "1763800002000")
	push("old", "1763800001000") // DingTalk's retry of an older push, arriving late
	push("new", "1763800002000") // and a repeat of the newest
	got, _, _ := f.sink.st.GetSuiteTicket(t.Context(), "saas")
	if got.Value != "new" || got.PushedAt.UnixMilli() != 1763800002000 {
		t.Fatalf("stored %q@%d, want new", got.Value, got.PushedAt.UnixMilli())
	}
	if f.sink.tickets != 3 {
		t.Fatalf("sink saw %d pushes, want 3 (every repeat is answered and offered)", f.sink.tickets)
	}
}

func TestTicketWithoutTimeStampUsesSignedTimestamp(t *testing.T) {
	f := newFixture(t)
	status, body := f.push(t, "saas", map[string]any{"EventType": "suite_ticket", "SuiteTicket": "v"}, false)
	if status != http.StatusOK {
		t.Fatalf("status %d %s", status, body)
	}
	got, _, _ := f.sink.st.GetSuiteTicket(t.Context(), "saas")
	if got.PushedAt.UnixMilli() != 1763800000123 {
		t.Fatalf("pushed at %d, want the query's signed timestamp", got.PushedAt.UnixMilli())
	}
}

// TestCorpEventPushTime: corp events carry their push time to the Sink (DingTalk repeats a relief
// for days, so the Sink orders authorization and relief by it): the event's TimeStamp, else the
// push's signed timestamp.
func TestCorpEventPushTime(t *testing.T) {
	f := newFixture(t)
	for _, ev := range []map[string]any{
		{"EventType": "tmp_auth_code", "AuthCorpId": "dingcorpa", "TimeStamp": "1763800000500"},
		{"EventType": "suite_relieve", "AuthCorpId": "dingcorpa"},
	} {
		if status, body := f.push(t, "saas", ev, false); status != http.StatusOK {
			t.Fatalf("%v: %d %s", ev, status, body)
		}
	}
	if fmt.Sprint(f.sink.corpAt) != "[1763800000500 1763800000123]" {
		t.Fatalf("push times %v", f.sink.corpAt)
	}
}

func TestRejected(t *testing.T) {
	f := newFixture(t)
	other, err := callback.New(cbToken, cbKey, "suiteother")
	if err != nil {
		t.Fatal(err)
	}
	otherToken, err := callback.New("othertoken", cbKey, suiteKey)
	if err != nil {
		t.Fatal(err)
	}
	event := []byte(`{"EventType":"suite_ticket","SuiteTicket":"must-not-be-used","TimeStamp":"1763800009999"}`)
	sealed := func(c *callback.Crypto) (url.Values, string) {
		r, err := c.Seal(event, "1", "n", rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return url.Values{"msg_signature": {r.MsgSignature}, "timestamp": {r.TimeStamp}, "nonce": {r.Nonce}}, fmt.Sprintf(`{"encrypt":%q}`, r.Encrypt)
	}
	good, goodBody := sealed(f.c)
	wrongOwnerQ, wrongOwnerBody := sealed(other)
	wrongTokenQ, wrongTokenBody := sealed(otherToken)
	tampered := url.Values{"msg_signature": {strings.Repeat("0", 40)}, "timestamp": good["timestamp"], "nonce": good["nonce"]}
	otherTS := url.Values{"msg_signature": good["msg_signature"], "timestamp": {"2"}, "nonce": good["nonce"]}
	cases := []struct {
		name   string
		app    string
		q      url.Values
		body   string
		status int
		code   string
	}{
		{"wrong owner", "saas", wrongOwnerQ, wrongOwnerBody, 403, "forbidden"},
		{"wrong token", "saas", wrongTokenQ, wrongTokenBody, 403, "forbidden"},
		{"bad signature", "saas", tampered, goodBody, 403, "forbidden"},
		{"signature over another timestamp", "saas", otherTS, goodBody, 403, "forbidden"},
		{"not JSON", "saas", good, "encrypt=x", 400, "bad_request"},
		{"no encrypt", "saas", good, `{}`, 400, "bad_request"},
		{"no signature", "saas", url.Values{"timestamp": {"1"}, "nonce": {"n"}}, goodBody, 400, "bad_request"},
		{"body too large", "saas", good, `{"encrypt":"` + strings.Repeat("A", 70<<10) + `"}`, 400, "bad_request"},
		{"unknown app", "nosuch", good, goodBody, 404, "app_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.post(t, tc.app, tc.q, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			var p struct{ Code string }
			if err := json.Unmarshal(body, &p); err != nil || p.Code != tc.code {
				t.Fatalf("problem %s, want code %s", body, tc.code)
			}
		})
	}
	if calls := f.sink.recorded(); len(calls) != 0 {
		t.Fatalf("rejected pushes reached the sink: %v", calls)
	}
	if strings.Contains(f.logs.String(), "must-not-be-used") {
		t.Fatal("a rejected ticket reached the logs")
	}
	// The control: the same push, correctly signed, is used.
	if status, body := f.post(t, "saas", good, goodBody); status != 200 {
		t.Fatalf("the good push: %d %s", status, body)
	}
}

// TestSampleVector: DingTalk's published sample passes the signature, decryption and owner checks;
// its plaintext ("success") is no event, so the handler answers 400 and uses nothing.
func TestSampleVector(t *testing.T) {
	c, err := callback.New(cbToken, cbKey, "dingxxxxxx")
	if err != nil {
		t.Fatal(err)
	}
	sink := &storeSink{st: store.NewMemory(store.MemoryOptions{})}
	h := suite.NewHandler(suite.Options{Apps: map[string]suite.Crypto{"corp": c}, Sink: sink})
	q := url.Values{"signature": {"f36f4ba5337d426c7d4bca0dbcb06b3ddc1388fc"}, "timestamp": {"1605695694141"}, "nonce": {"WelUQl6bCqcBa2fM"}}
	body := `{"encrypt":"X1VSe9cTJUMZu60d3kyLYTrBq5578ZRJtteU94wG0Q4Uk6E/wQYeJRIC0/UFW5Wkya1Ihz9oXAdLlyC9TRaqsQ=="}`
	r := httptest.NewRequest("POST", "/callbacks/corp?"+q.Encode(), strings.NewReader(body))
	_, _, err = h.Receive(r, "corp")
	if !errors.Is(err, suite.ErrBadEvent) {
		t.Fatalf("Receive(sample) = %v, want ErrBadEvent (it decrypted, to a non-event)", err)
	}
	q.Set("signature", strings.Repeat("f", 40))
	r = httptest.NewRequest("POST", "/callbacks/corp?"+q.Encode(), strings.NewReader(body))
	if _, _, err = h.Receive(r, "corp"); !errors.Is(err, suite.ErrRejected) {
		t.Fatalf("Receive(sample, bad signature) = %v, want ErrRejected", err)
	}
}

func TestSinkFailure(t *testing.T) {
	f := newFixture(t)
	f.sink.err = errors.New("store down")
	status, body := f.push(t, "saas", map[string]any{"EventType": "suite_ticket", "SuiteTicket": "tk-secret", "TimeStamp": "5"}, false)
	if status != http.StatusInternalServerError || bytes.Contains(body, []byte("tk-secret")) {
		t.Fatalf("status %d body %s; want 500 without the ticket", status, body)
	}
	if strings.Contains(f.logs.String(), "tk-secret") {
		t.Fatal("logs carry the ticket")
	}
}

func TestDecodeEvent(t *testing.T) {
	cases := []struct {
		in      string
		wantErr bool
		want    suite.Event
	}{
		{`{"EventType":"suite_ticket","SuiteTicket":"a","TimeStamp":"12"}`, false, suite.Event{Type: "suite_ticket", SuiteTicket: "a", PushedAt: time.UnixMilli(12).UTC()}},
		{`{"EventType":"suite_ticket","SuiteTicket":"a"}`, false, suite.Event{Type: "suite_ticket", SuiteTicket: "a"}},
		{`{"EventType":"suite_ticket","TimeStamp":"12"}`, true, suite.Event{}},
		{`{"EventType":"suite_ticket","SuiteTicket":"a","TimeStamp":"-1"}`, true, suite.Event{}},
		{`{"EventType":"suite_ticket","SuiteTicket":"a","TimeStamp":"1e3"}`, true, suite.Event{}},
		{`{"EventType":"suite_ticket","SuiteTicket":"a","TimeStamp":true}`, true, suite.Event{}},
		{`{"EventType":"tmp_auth_code"}`, true, suite.Event{}},
		{`{"EventType":"tmp_auth_code","AuthCorpId":"dingx","TimeStamp":"x"}`, true, suite.Event{}},
		{`{"EventType":"tmp_auth_code","AuthCorpId":"dingx","AuthCode":"c","TimeStamp":7}`, false, suite.Event{Type: "tmp_auth_code", Corp: "dingx", PushedAt: time.UnixMilli(7).UTC()}},
		{`{"EventType":"suite_relieve","AuthCorpId":"a/b"}`, true, suite.Event{}},
		{`{"EventType":"suite_relieve","AuthCorpId":"dingx"}`, false, suite.Event{Type: "suite_relieve", Corp: "dingx"}},
		{`{"SuiteTicket":"a"}`, true, suite.Event{}},
		{`"success"`, true, suite.Event{}},
		{`{"EventType":1}`, true, suite.Event{}},
	}
	for _, tc := range cases {
		got, err := suite.DecodeEvent([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("DecodeEvent(%s) = %+v, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, suite.ErrBadEvent) {
			t.Errorf("DecodeEvent(%s) error %v does not wrap ErrBadEvent", tc.in, err)
		}
	}
}
