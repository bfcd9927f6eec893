// Package dingtalkapi is DingTalk's error vocabulary, written once for tokend and for its Go client:
// how the two API families say that a call failed, and which of their codes mean "the access token
// used is invalid".
//
// The legacy API (oapi.dingtalk.com) answers HTTP 200 whatever the outcome, with a non-zero errcode on
// failure; its /topapi paths wrap failures as errcode 88 with the real cause in sub_code. The new API
// (api.dingtalk.com) answers a 2xx status with the payload on success and a 4xx/5xx status with
// {"code","message","requestid"} on failure. Codes arrive as JSON numbers or strings.
//
// The package is pure, has no state and imports nothing of tokend; tokend's internal packages and the
// public client both depend on it. It does not recognise DingTalk's per-IP block (an HTML page or
// {"status":1111,"punish":"deny"}): check for that first.
package dingtalkapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrMalformed is wrapped by the errors of this package for a body that is not the DingTalk envelope
// expected (an HTML page, an IP-ban notice, truncated JSON, a missing or non-code errcode/code). Such
// errors never repeat the body.
var ErrMalformed = errors.New("malformed dingtalk response")

// Failure is a failure DingTalk reported in one of its envelopes. It carries what DingTalk sent, which
// for the legacy API can include the calling IP in Message, but never a request's secret or token.
type Failure struct {
	// Code is the legacy errcode in decimal ("40014") or the new API's code ("InvalidAuthentication").
	Code string
	// SubCode is the legacy sub_code ("40014" under errcode 88 on /topapi paths), "" otherwise.
	SubCode string
	// Message is DingTalk's errmsg or message, as DingTalk sent it.
	Message string
	// Status is the HTTP status of the answer when it was given to the parser: always for the new
	// API, 0 for ParseLegacy (legacy failures come with HTTP 200).
	Status int
	// RequestID is the new API's requestid, "" otherwise.
	RequestID string
}

// Error returns "dingtalk error <code>[/<sub_code>]: <message>".
func (f *Failure) Error() string {
	var b strings.Builder
	b.WriteString("dingtalk error ")
	b.WriteString(f.Code)
	if f.SubCode != "" {
		b.WriteString("/")
		b.WriteString(f.SubCode)
	}
	if f.Message != "" {
		b.WriteString(": ")
		b.WriteString(f.Message)
	}
	return b.String()
}

// Cause returns the code that says what went wrong: the sub_code under a legacy errcode 88 when there
// is one, Code otherwise.
func (f *Failure) Cause() string {
	if f.Code == wrapperCode && f.SubCode != "" {
		return f.SubCode
	}
	return f.Code
}

// InvalidToken reports whether f says the access token used is invalid (see IsInvalidToken).
func (f *Failure) InvalidToken() bool { return IsInvalidToken(f.Code, f.SubCode) }

// wrapperCode is the legacy errcode of /topapi paths whose real cause is in sub_code.
const wrapperCode = "88"

// IsInvalidToken reports whether DingTalk's code, with the legacy sub_code when there is one, says the
// access token used is invalid: legacy errcode 40014 (invalid), 42001 (expired) or 40001 (invalid
// credential, on APIs other than gettoken); errcode 88 with one of those as sub_code (DingTalk
// documents "40014"); new-API code InvalidAuthentication (in any case). These are the failures a
// service reports to tokend's invalidate endpoint; this is the only place the rule is written.
func IsInvalidToken(code, subCode string) bool {
	if code == wrapperCode {
		code = subCode
	}
	switch code {
	case "40014", "42001", "40001":
		return true
	}
	return strings.EqualFold(code, "InvalidAuthentication")
}

// Envelope holds the members of a DingTalk answer that say whether it failed, in either family.
// Decode an answer into it, or into a struct embedding it to read the payload in the same pass.
type Envelope struct {
	// Legacy family.
	ErrCode json.RawMessage `json:"errcode"`
	ErrMsg  string          `json:"errmsg"`
	SubCode json.RawMessage `json:"sub_code"`
	SubMsg  string          `json:"sub_msg"`
	// New family.
	Code      json.RawMessage `json:"code"`
	Message   string          `json:"message"`
	RequestID string          `json:"requestid"`
}

// LegacyFailure returns the failure a legacy envelope reports: nil when errcode is absent, null or
// 0, a *Failure (with Status 0) for any other errcode, and an error wrapping ErrMalformed when errcode
// is neither a string nor a whole number. A sub_code that is not a code is left out: the errcode
// alone still says the call failed.
func (e *Envelope) LegacyFailure() (*Failure, error) {
	code, ok := ParseCode(e.ErrCode)
	if !ok {
		return nil, fmt.Errorf("legacy errcode is not a code: %w", ErrMalformed)
	}
	if code == "" || code == "0" {
		return nil, nil
	}
	sub, _ := ParseCode(e.SubCode)
	return &Failure{Code: code, SubCode: sub, Message: e.ErrMsg}, nil
}

// NewFailure returns the failure a new-API envelope sent with HTTP status reports: nil when code is
// absent, null or empty, a *Failure otherwise, and an error wrapping ErrMalformed when code is neither
// a string nor a whole number. It does not look at status, which it only records: on the new API, a
// failure is told by its code.
func (e *Envelope) NewFailure(status int) (*Failure, error) {
	code, ok := ParseCode(e.Code)
	if !ok {
		return nil, fmt.Errorf("new-API code is not a code: %w", ErrMalformed)
	}
	if code == "" {
		return nil, nil
	}
	return &Failure{Code: code, Message: e.Message, Status: status, RequestID: e.RequestID}, nil
}

// ParseLegacy reads the body of a legacy (oapi.dingtalk.com) answer. It returns nil, nil when errcode
// is 0, a *Failure for a non-zero errcode, and an error wrapping ErrMalformed when body is not a JSON
// object with an errcode.
func ParseLegacy(body []byte) (*Failure, error) {
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("legacy answer is not a JSON object: %w", ErrMalformed)
	}
	if code, ok := ParseCode(e.ErrCode); ok && code == "" {
		return nil, fmt.Errorf("legacy answer has no errcode: %w", ErrMalformed)
	}
	return e.LegacyFailure()
}

// ParseNew reads a new-API (api.dingtalk.com) answer: status is its HTTP status and body its body. It
// returns nil, nil for a 2xx status, a *Failure for a failure with the {"code","message","requestid"}
// envelope, and an error wrapping ErrMalformed for a failure without it.
func ParseNew(status int, body []byte) (*Failure, error) {
	if status >= 200 && status < 300 {
		return nil, nil
	}
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("new-API answer with HTTP %d is not a JSON object: %w", status, ErrMalformed)
	}
	f, err := e.NewFailure(status)
	if err == nil && f == nil {
		err = fmt.Errorf("new-API answer with HTTP %d has no code: %w", status, ErrMalformed)
	}
	return f, err
}

// Parse reads an answer of either family, for a caller that passes answers through without knowing
// which family each comes from (tokend's proxy). A JSON object with an errcode is read as a legacy
// answer (the *Failure then carries status); otherwise a 2xx status is a success (nil, nil) and any
// other status is read as a new-API answer. Errors wrap ErrMalformed, as for ParseLegacy and ParseNew.
// The per-IP block is not recognised here: check for it first.
func Parse(status int, body []byte) (*Failure, error) {
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		if status >= 200 && status < 300 {
			return nil, nil
		}
		return nil, fmt.Errorf("answer with HTTP %d is not a JSON object: %w", status, ErrMalformed)
	}
	if code, ok := ParseCode(e.ErrCode); !ok || code != "" {
		f, err := e.LegacyFailure()
		if f != nil {
			f.Status = status
		}
		return f, err
	}
	if status >= 200 && status < 300 {
		return nil, nil
	}
	f, err := e.NewFailure(status)
	if err == nil && f == nil {
		err = fmt.Errorf("answer with HTTP %d has neither errcode nor code: %w", status, ErrMalformed)
	}
	return f, err
}

// ParseCode reads a code DingTalk sends as a JSON number or string, in the form this package compares
// codes: a whole number in decimal ("40014" for 40014, 40014.0 or " 40014 "), any other string
// trimmed. It returns "" with ok true for an absent, null or blank member, and ok false for a member
// that is neither a string nor a whole number.
func ParseCode(raw json.RawMessage) (code string, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		s = strings.TrimSpace(s)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return strconv.FormatInt(n, 10), true
		}
		return s, true
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return strconv.FormatInt(n, 10), true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1e15 {
		return "", false
	}
	return strconv.FormatInt(int64(f), 10), true
}
