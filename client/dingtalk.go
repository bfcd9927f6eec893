package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/tokend/tokend/dingtalkapi"
)

// DingTalkError is a failure DingTalk reported for a call made with an access token. Return one (or
// an error wrapping one) from the function given to Do so that Do can tell an invalid token from
// other failures; build it with LegacyError, NewAPIError, CheckLegacy or CheckNew.
//
// It is dingtalkapi.Failure, the one definition shared with tokend: Code (the legacy errcode in
// decimal or the new API's code), SubCode (the legacy sub_code under errcode 88), Message (DingTalk's
// errmsg or message as sent), Status (the HTTP status of a new-API failure; 0 for legacy failures,
// sent with HTTP 200) and RequestID (the new API's requestid). Its Error method returns
// "dingtalk error <code>[/<sub_code>]: <message>".
type DingTalkError = dingtalkapi.Failure

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

// IsInvalidToken reports whether err is (or wraps) a *DingTalkError saying the access token used is
// invalid: legacy errcode 40014, 42001 or 40001; errcode 88 with one of those as sub_code (DingTalk
// documents "40014"); new-API code "InvalidAuthentication". These are the failures to report with
// Invalidate; Do does so by itself. The rule is dingtalkapi.IsInvalidToken, the one tokend uses.
func IsInvalidToken(err error) bool {
	var de *DingTalkError
	return errors.As(err, &de) && de.InvalidToken()
}

// ErrMalformedResponse is wrapped by the errors CheckLegacy and CheckNew return for a body that is not
// a DingTalk JSON envelope (an HTML page, an IP-ban notice, truncated JSON). Such errors never repeat
// the body. It is dingtalkapi.ErrMalformed.
var ErrMalformedResponse = dingtalkapi.ErrMalformed

// CheckLegacy checks the body of a legacy (oapi.dingtalk.com) answer, which DingTalk sends with HTTP
// 200 whatever the outcome. It returns nil when errcode is 0, a *DingTalkError for a non-zero errcode
// (errcode and sub_code may be JSON numbers or strings), and an error wrapping ErrMalformedResponse
// when body is not a JSON object with an errcode.
func CheckLegacy(body []byte) error {
	return failure(dingtalkapi.ParseLegacy(body))
}

// CheckNew checks a new-API (api.dingtalk.com) answer: status is its HTTP status and body its body.
// It returns nil for a 2xx status, a *DingTalkError (with Code, Message, Status and RequestID) for a
// failure with the {"code","message","requestid"} envelope, and an error wrapping
// ErrMalformedResponse for a failure without it.
func CheckNew(status int, body []byte) error {
	return failure(dingtalkapi.ParseNew(status, body))
}

// failure turns a parser's result into one error, and a nil *Failure into a nil error.
func failure(f *dingtalkapi.Failure, err error) error {
	if err != nil {
		return err
	}
	if f == nil {
		return nil
	}
	return f
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
