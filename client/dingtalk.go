package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DingTalkError is a failure DingTalk reported for a call made with an access token. Return one (or
// an error wrapping one) from the function given to Do so that Do can tell an invalid token from
// other failures; build it with LegacyError, NewAPIError, CheckLegacy or CheckNew.
type DingTalkError struct {
	// Code is the legacy errcode in decimal ("40014") or the new API's code ("InvalidAuthentication").
	Code string
	// SubCode is the legacy sub_code ("40014" under errcode 88 on /topapi paths), "" otherwise.
	SubCode string
	// Message is DingTalk's errmsg or message, as DingTalk sent it.
	Message string
	// Status is the HTTP status of a new-API failure; 0 for legacy failures (sent with HTTP 200).
	Status int
	// RequestID is the new API's requestid, "" otherwise.
	RequestID string
}

// Error returns "dingtalk error <code>[/<sub_code>]: <message>".
func (e *DingTalkError) Error() string {
	var b strings.Builder
	b.WriteString("dingtalk error ")
	b.WriteString(e.Code)
	if e.SubCode != "" {
		b.WriteString("/")
		b.WriteString(e.SubCode)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// LegacyError returns the *DingTalkError of a legacy (oapi.dingtalk.com) failure: errcode and, for
// /topapi paths' errcode 88, the sub_code ("" if none).
func LegacyError(errcode int, subCode string) error {
	return &DingTalkError{Code: strconv.Itoa(errcode), SubCode: subCode}
}

// NewAPIError returns the *DingTalkError of a new-API (api.dingtalk.com) failure with code, such as
// "InvalidAuthentication".
func NewAPIError(code string) error {
	return &DingTalkError{Code: code}
}

// invalidTokenCodes are the legacy errcodes that mean "this access token is invalid": 40014 (invalid),
// 42001 (expired), 40001 (invalid credential, on APIs other than gettoken).
var invalidTokenCodes = map[string]bool{"40014": true, "42001": true, "40001": true}

// IsInvalidToken reports whether err is (or wraps) a *DingTalkError saying the access token used is
// invalid: legacy errcode 40014, 42001 or 40001; errcode 88 with one of those as sub_code (DingTalk
// documents "40014"); new-API code "InvalidAuthentication". These are the failures to report with
// Invalidate; Do does so by itself.
func IsInvalidToken(err error) bool {
	var de *DingTalkError
	if !errors.As(err, &de) {
		return false
	}
	switch {
	case invalidTokenCodes[de.Code]:
		return true
	case de.Code == "88":
		return invalidTokenCodes[de.SubCode]
	case de.Code == "InvalidAuthentication":
		return true
	}
	return false
}

// ErrMalformedResponse is wrapped by the errors CheckLegacy and CheckNew return for a body that is not
// a DingTalk JSON envelope (an HTML page, an IP-ban notice, truncated JSON). Such errors never repeat
// the body.
var ErrMalformedResponse = errors.New("malformed dingtalk response")

// CheckLegacy checks the body of a legacy (oapi.dingtalk.com) answer, which DingTalk sends with HTTP
// 200 whatever the outcome. It returns nil when errcode is 0, a *DingTalkError for a non-zero errcode
// (errcode and sub_code may be JSON numbers or strings), and an error wrapping ErrMalformedResponse
// when body is not a JSON object with an errcode.
func CheckLegacy(body []byte) error {
	var env struct {
		ErrCode json.RawMessage `json:"errcode"`
		ErrMsg  string          `json:"errmsg"`
		SubCode json.RawMessage `json:"sub_code"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("legacy answer is not a JSON object: %w", ErrMalformedResponse)
	}
	code, ok := codeString(env.ErrCode)
	if !ok {
		return fmt.Errorf("legacy answer has no errcode: %w", ErrMalformedResponse)
	}
	if n, err := strconv.ParseInt(code, 10, 64); err == nil && n == 0 {
		return nil
	}
	sub, _ := codeString(env.SubCode)
	return &DingTalkError{Code: code, SubCode: sub, Message: env.ErrMsg}
}

// codeString returns a JSON number or string as a string ("40014" for 40014, 40014.0 or "40014").
func codeString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		s = strings.TrimSpace(s)
		return s, s != ""
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	if i, err := n.Int64(); err == nil {
		return strconv.FormatInt(i, 10), true
	}
	if f, err := n.Float64(); err == nil && f == float64(int64(f)) {
		return strconv.FormatInt(int64(f), 10), true
	}
	return n.String(), true
}

// CheckNew checks a new-API (api.dingtalk.com) answer: status is its HTTP status and body its body.
// It returns nil for a 2xx status, a *DingTalkError (with Code, Message, Status and RequestID) for a
// failure with the {"code","message","requestid"} envelope, and an error wrapping
// ErrMalformedResponse for a failure without it.
func CheckNew(status int, body []byte) error {
	if status >= 200 && status < 300 {
		return nil
	}
	var env struct {
		Code      json.RawMessage `json:"code"`
		Message   string          `json:"message"`
		RequestID string          `json:"requestid"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("new-API answer with HTTP %d is not a JSON object: %w", status, ErrMalformedResponse)
	}
	code, ok := codeString(env.Code)
	if !ok {
		return fmt.Errorf("new-API answer with HTTP %d has no code: %w", status, ErrMalformedResponse)
	}
	return &DingTalkError{Code: code, Message: env.Message, Status: status, RequestID: env.RequestID}
}

// Do runs call with a valid access token of app. If call fails because DingTalk rejected the token
// (IsInvalidToken), Do reports the token with Invalidate and runs call once more with the token
// tokend returns; it never runs call more than twice, and never retries other failures. call must be
// safe to run twice (the first run failed on authentication, so DingTalk did nothing).
//
// Do returns nil or call's error as call returned it; the error of AccessToken when no token could be
// had; or, when the report failed, an error wrapping both the report's error and call's (so
// errors.Is(err, ErrRateLimited) and IsInvalidToken(err) both work).
func (c *Client) Do(ctx context.Context, app string, call func(ctx context.Context, accessToken string) error) error {
	t, err := c.AccessToken(ctx, app)
	if err != nil {
		return err
	}
	err = call(ctx, t.Value)
	if err == nil || !IsInvalidToken(err) {
		return err
	}
	fresh, ierr := c.Invalidate(ctx, app, t.Value)
	if ierr != nil {
		return fmt.Errorf("%w (after the call failed: %w)", ierr, err)
	}
	return call(ctx, fresh.Value)
}
