package suite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/callback"
	"github.com/tokend/tokend/internal/suite"
)

// secretSink records what it is given and fails when asked to.
type secretSink struct{ got []string }

func (s *secretSink) SuiteTicket(_ context.Context, _, ticket string, at time.Time) error {
	if at.IsZero() || ticket == "" {
		return errors.New("a ticket without value or time reached the sink")
	}
	s.got = append(s.got, ticket)
	return nil
}
func (s *secretSink) CorpAuthorized(_ context.Context, _, corp string, _ time.Time) error {
	s.got = append(s.got, corp)
	return nil
}
func (s *secretSink) CorpRelieved(_ context.Context, _, corp string, _ time.Time) error {
	s.got = append(s.got, corp)
	return nil
}

// FuzzReceive feeds the callback handler (1) an arbitrary query and body, which must never reach the
// sink (nothing can be signed without the token), and (2) an arbitrary plaintext sealed as DingTalk
// would, which exercises the event decoding: the handler answers 200 with a sealed answer, or 400,
// and never panics.
func FuzzReceive(f *testing.F) {
	f.Add("msg_signature=f36f4ba5337d426c7d4bca0dbcb06b3ddc1388fc&timestamp=1605695694141&nonce=WelUQl6bCqcBa2fM",
		[]byte(`{"encrypt":"X1VSe9cTJUMZu60d3kyLYTrBq5578ZRJtteU94wG0Q4Uk6E/wQYeJRIC0/UFW5Wkya1Ihz9oXAdLlyC9TRaqsQ=="}`),
		[]byte(`{"EventType":"suite_ticket","SuiteTicket":"t","TimeStamp":"1763800000000"}`))
	f.Add("signature=x&timeStamp=1&nonce=n", []byte(`{"encrypt":""}`), []byte(`{"EventType":"check_create_suite_url","Random":"r"}`))
	f.Add("", []byte(``), []byte(`{"EventType":"tmp_auth_code","AuthCorpId":"dingcorp","AuthCode":"c"}`))
	f.Add("timestamp=1&timestamp=2", []byte(`{"encrypt":1}`), []byte(`{"EventType":"suite_relieve","AuthCorpId":"../x"}`))
	c, err := callback.New(cbToken, cbKey, suiteKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, query string, body, event []byte) {
		sink := &secretSink{}
		h := suite.NewHandler(suite.Options{Apps: map[string]suite.Crypto{"saas": c}, Sink: sink})
		serve := func(q string, b []byte) *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodPost, "/callbacks/saas", bytes.NewReader(b))
			r.URL.RawQuery = q
			r.SetPathValue("app", "saas")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}

		w := serve(query, body)
		if len(sink.got) != 0 {
			t.Fatalf("an unsigned push reached the sink (status %d)", w.Code)
		}
		if w.Code == http.StatusOK {
			t.Fatal("an unsigned push was answered 200")
		}

		sealed, err := c.Seal(event, "1763800000000", "fuzznonce", rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{"msg_signature": {sealed.MsgSignature}, "timestamp": {sealed.TimeStamp}, "nonce": {sealed.Nonce}}
		enc, _ := json.Marshal(map[string]string{"encrypt": sealed.Encrypt})
		w = serve(q.Encode(), enc)
		switch w.Code {
		case http.StatusOK:
			var reply callback.Reply
			if err := json.Unmarshal(w.Body.Bytes(), &reply); err != nil {
				t.Fatalf("200 answer is not a reply: %v", err)
			}
			if _, err := c.Open(reply.MsgSignature, reply.TimeStamp, reply.Nonce, reply.Encrypt); err != nil {
				t.Fatalf("the answer does not open: %v", err)
			}
		case http.StatusBadRequest:
			if len(sink.got) != 0 {
				t.Fatal("a push answered 400 reached the sink")
			}
			var secret struct{ SuiteTicket, AuthCode string }
			_ = json.Unmarshal(event, &secret)
			for _, v := range []string{secret.SuiteTicket, secret.AuthCode} {
				if len(v) >= 12 && strings.Contains(w.Body.String(), v) {
					t.Fatal("the problem quotes a secret of the event")
				}
			}
		default:
			t.Fatalf("sealed push answered %d: %s", w.Code, w.Body)
		}
	})
}
