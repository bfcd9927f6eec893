package fakedingtalk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/callback"
)

// ISV event types the fake can push, over HTTP (PushEvent) or Stream (PublishStream).
const (
	EventCheckURL            = "check_url"
	EventCheckCreateSuiteURL = "check_create_suite_url"
	EventCheckUpdateSuiteURL = "check_update_suite_url"
	EventSuiteTicket         = "suite_ticket"
	EventTmpAuthCode         = "tmp_auth_code"
	EventSuiteRelieve        = "suite_relieve"
)

// pushTimeout bounds one HTTP push; DingTalk wants an answer within 1.5 s, the fake is lenient.
const pushTimeout = 5 * time.Second

// pushTarget is where a suite's HTTP pushes go, with the suite's callback crypto.
type pushTarget struct {
	url    string
	crypto *callback.Crypto
	client *http.Client
}

// ISVEvent is an event for the fake to push. Its JSON form is the control API's body.
type ISVEvent struct {
	// Type is one of the Event* constants.
	Type string `json:"event"`
	// Corp is the AuthCorpId of tmp_auth_code and suite_relieve.
	Corp string `json:"corp,omitempty"`
	// SuiteTicket, for suite_ticket, pushes that value (an older ticket, say); "" mints a new one.
	SuiteTicket string `json:"suite_ticket,omitempty"`
	// PushedAt, for suite_ticket, is the TimeStamp the event carries; zero means Options.Now.
	PushedAt time.Time `json:"pushed_at,omitzero"`
}

// PushResult is what came of an HTTP push.
type PushResult struct {
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// Answer is the decrypted answer ("" when there was none or it did not open).
	Answer string `json:"answer"`
	// OK is true when the answer was 200, opened with the suite's crypto and said what DingTalk wants
	// ("success", or the Random of a check_*_suite_url).
	OK bool `json:"ok"`
	// SuiteTicket and PushedAt are the ticket a suite_ticket push carried.
	SuiteTicket string    `json:"suite_ticket,omitempty"`
	PushedAt    time.Time `json:"pushed_at,omitzero"`
}

// SetCallback makes the suite's HTTP pushes go to rawURL, encrypted with token and the 43-character
// aesKey, the owner being the suite key, as DingTalk's callback crypto does.
func (s *Server) SetCallback(suiteKey, rawURL, token, aesKey string) error {
	if _, err := url.Parse(rawURL); err != nil {
		return fmt.Errorf("callback url: %w", err)
	}
	c, err := callback.New(token, aesKey, suiteKey)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	su := s.suiteLocked(suiteKey)
	if su == nil {
		return ErrUnknownSuite
	}
	su.callback = &pushTarget{url: rawURL, crypto: c, client: &http.Client{Timeout: pushTimeout}}
	return nil
}

// prepared is an event ready to send: its JSON and what the answer must say.
type prepared struct {
	msg      []byte
	answer   string
	ticket   string
	pushedAt time.Time
	corp     string
}

// prepareEvent applies the event to the model (a suite_ticket mints, tmp_auth_code authorizes,
// suite_relieve relieves) and returns it encoded as DingTalk pushes it.
func (s *Server) prepareEvent(suiteKey string, ev ISVEvent) (prepared, error) {
	now := s.now()
	p := prepared{answer: "success", corp: ev.Corp}
	body := map[string]any{"EventType": ev.Type, "SuiteKey": suiteKey, "TimeStamp": strconv.FormatInt(now.UnixMilli(), 10)}
	switch ev.Type {
	case EventCheckURL:
		delete(body, "SuiteKey")
	case EventCheckCreateSuiteURL, EventCheckUpdateSuiteURL:
		p.answer = randomHex(8)
		body["Random"], body["TestSuiteKey"] = p.answer, suiteKey
	case EventSuiteTicket:
		p.ticket, p.pushedAt = ev.SuiteTicket, ev.PushedAt
		if p.pushedAt.IsZero() {
			p.pushedAt = now
		}
		if p.ticket == "" {
			var minted time.Time
			var err error
			if p.ticket, minted, err = s.MintSuiteTicket(suiteKey); err != nil {
				return prepared{}, err
			}
			if ev.PushedAt.IsZero() {
				p.pushedAt = minted
			}
		}
		body["SuiteTicket"], body["TimeStamp"] = p.ticket, strconv.FormatInt(p.pushedAt.UnixMilli(), 10)
	case EventTmpAuthCode, EventSuiteRelieve:
		if ev.Corp == "" {
			return prepared{}, errors.New("corp is required")
		}
		var err error
		if ev.Type == EventTmpAuthCode {
			err = s.AuthorizeCorp(suiteKey, ev.Corp)
			body["AuthCode"] = randomHex(16)
		} else {
			err = s.RelieveCorp(suiteKey, ev.Corp)
		}
		if err != nil {
			return prepared{}, err
		}
		body["AuthCorpId"] = ev.Corp
	default:
		return prepared{}, fmt.Errorf("unknown event %q", ev.Type)
	}
	s.mu.Lock()
	known := s.suiteLocked(suiteKey) != nil
	s.mu.Unlock()
	if !known {
		return prepared{}, ErrUnknownSuite
	}
	msg, err := json.Marshal(body)
	if err != nil {
		return prepared{}, err
	}
	p.msg = msg
	return p, nil
}

// PushEvent applies ev to the model and pushes it, encrypted, to the suite's callback URL (see
// SetCallback), as DingTalk's HTTP push does; it returns what the receiver answered. An error means
// the push could not be made or sent at all.
func (s *Server) PushEvent(ctx context.Context, suiteKey string, ev ISVEvent) (PushResult, error) {
	s.mu.Lock()
	su := s.suiteLocked(suiteKey)
	var target *pushTarget
	if su != nil {
		target = su.callback
	}
	s.mu.Unlock()
	if su == nil {
		return PushResult{}, ErrUnknownSuite
	}
	if target == nil {
		return PushResult{}, errors.New("no callback set for the suite")
	}
	p, err := s.prepareEvent(suiteKey, ev)
	if err != nil {
		return PushResult{}, err
	}
	sealed, err := target.crypto.Seal(p.msg, strconv.FormatInt(s.now().UnixMilli(), 10), randomHex(8), rand.Reader)
	if err != nil {
		return PushResult{}, err
	}
	q := url.Values{"msg_signature": {sealed.MsgSignature}, "timestamp": {sealed.TimeStamp}, "nonce": {sealed.Nonce}}
	body, _ := json.Marshal(map[string]string{"encrypt": sealed.Encrypt})
	sep := "?"
	if u, _ := url.Parse(target.url); u != nil && u.RawQuery != "" {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.url+sep+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return PushResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := target.client.Do(req)
	if err != nil {
		return PushResult{}, fmt.Errorf("push: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	res := PushResult{Status: resp.StatusCode, SuiteTicket: p.ticket, PushedAt: p.pushedAt}
	var reply callback.Reply
	if resp.StatusCode == http.StatusOK && json.Unmarshal(raw, &reply) == nil {
		if msg, err := target.crypto.Open(reply.MsgSignature, reply.TimeStamp, reply.Nonce, reply.Encrypt); err == nil {
			res.Answer = string(msg)
			res.OK = res.Answer == p.answer
		}
	}
	s.log.Info("fake dingtalk pushed event", "suite", suiteKey, "event", ev.Type, "corp", ev.Corp, "status", res.Status, "ok", res.OK)
	return res, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
