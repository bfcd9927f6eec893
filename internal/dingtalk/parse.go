package dingtalk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/dingtalkapi"
)

// MaxExpiresIn is the longest lifetime the client accepts from DingTalk. A larger expires_in/expireIn
// (or one ≤ 0) is rejected as ClassUnavailable "bad_response": such values have caused refetch loops
// and stale caches in real clients.
const MaxExpiresIn = 24 * time.Hour

// MaxResponseBytes is the most the client reads of any response body; a longer body is a
// "bad_response" (or "ip_ban" when it is an HTML page).
const MaxResponseBytes = 1 << 20

// maxMessageBytes bounds the DingTalk message kept in an Error.
const maxMessageBytes = 512

// Codes the client produces itself (Family is FamilyTransport).
const (
	CodeTimeout     = "timeout"
	CodeNetwork     = "network"
	CodeIPBan       = "ip_ban"
	CodeBadResponse = "bad_response"
	// CodeBadRequest is returned without any network call when the App or API passed in is not one
	// the client knows (a programming or configuration error).
	CodeBadRequest = "bad_request"
)

// classes maps DingTalk codes of both families, lower-cased, to what they mean for the broker. Codes
// not listed are ClassUnavailable. The two families' codes never collide (legacy codes are numbers).
var classes = map[string]Class{
	// Wrong appKey/appSecret or corpid/corpsecret.
	"40096":                   ClassCredentials,
	"40089":                   ClassCredentials,
	"invalidclientidorsecret": ClassCredentials,
	// The calling IP is not in the app's allowlist.
	"60020": ClassIPNotAllowed,
	"forbidden.accessdenied.ipnotinwhitelist": ClassIPNotAllowed,
	// QPS limits.
	"90018": ClassRateLimited,
	"90002": ClassRateLimited,
	"forbidden.accessdenied.qpslimitforappkeyandapi": ClassRateLimited,
	"forbidden.accessdenied.qpslimitforapi":          ClassRateLimited,
	"qpslimitforappkeyandapi":                        ClassRateLimited,
	"qpslimitforapi":                                 ClassRateLimited,
	// Busy.
	"-1":          ClassUnavailable,
	"systembusy":  ClassUnavailable,
	"system.busy": ClassUnavailable,
	// The request was built wrongly.
	"40035":                                 ClassBadRequest,
	"41001":                                 ClassBadRequest,
	"missingbody":                           ClassBadRequest,
	"authenticationfailed.missingparameter": ClassBadRequest,
}

// classify returns the class of a DingTalk code of either family (for a legacy errcode 88, its
// sub_code); unknown codes are ClassUnavailable. Which codes mean "the access token passed is invalid"
// is dingtalkapi's rule, shared with the public client.
func classify(code string) Class {
	if dingtalkapi.IsInvalidToken(code, "") {
		return ClassInvalidToken
	}
	if c, ok := classes[strings.ToLower(code)]; ok {
		return c
	}
	return ClassUnavailable
}

// field names the JSON member holding the credential in a success body.
type field struct {
	legacy string // "access_token" or "ticket"
	new    string // "accessToken" or "jsapiTicket"
}

var (
	tokenField  = field{legacy: "access_token", new: "accessToken"}
	ticketField = field{legacy: "ticket", new: "jsapiTicket"}
)

// legacyBody is every member of a legacy (oapi) answer the client looks at: the error envelope and
// the payload.
type legacyBody struct {
	dingtalkapi.Envelope
	AccessToken string          `json:"access_token"`
	Ticket      string          `json:"ticket"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
}

// newBody is every member of a new-API (api host) answer the client looks at. Its envelope's legacy
// members are read too: the api host answers unknown paths in the legacy envelope.
type newBody struct {
	dingtalkapi.Envelope
	AccessToken string          `json:"accessToken"`
	JSAPITicket string          `json:"jsapiTicket"`
	ExpireIn    json.RawMessage `json:"expireIn"`
}

// parseLegacy interprets a legacy (oapi host) answer whose credential is in member f.legacy. It is
// pure: status is the HTTP status, contentType the Content-Type header, body at most
// MaxResponseBytes (truncated reports that more followed). Exactly one of the results is meaningful.
// The Message of the returned Error is not yet scrubbed of secrets.
func parseLegacy(status int, contentType string, body []byte, truncated bool, f field) (Grant, *Error) {
	if e := checkBan(status, contentType, body); e != nil {
		return Grant{}, e
	}
	if truncated {
		return Grant{}, badResponse(status, "response body too large")
	}
	var b legacyBody
	if err := json.Unmarshal(body, &b); err != nil {
		if status >= 300 {
			return Grant{}, httpStatusError(status)
		}
		return Grant{}, badResponse(status, "malformed json")
	}
	df, err := b.LegacyFailure()
	if err != nil {
		return Grant{}, badResponse(status, "malformed errcode")
	}
	if df != nil {
		return Grant{}, legacyError(status, df, b.SubMsg)
	}
	if status < 200 || status >= 300 {
		return Grant{}, httpStatusError(status)
	}
	value := b.AccessToken
	if f.legacy == ticketField.legacy {
		value = b.Ticket
	}
	return grant(status, value, b.ExpiresIn, f.legacy)
}

// parseNew interprets a new-API (api host) answer whose credential is in member f.new. See
// parseLegacy for the arguments. On failure it branches on DingTalk's code, not on the HTTP status.
func parseNew(status int, contentType string, body []byte, truncated bool, f field) (Grant, *Error) {
	if e := checkBan(status, contentType, body); e != nil {
		return Grant{}, e
	}
	if truncated {
		return Grant{}, badResponse(status, "response body too large")
	}
	var b newBody
	if err := json.Unmarshal(body, &b); err != nil {
		if status >= 300 {
			return Grant{}, httpStatusError(status)
		}
		return Grant{}, badResponse(status, "malformed json")
	}
	ok2xx := status >= 200 && status < 300
	df, err := b.NewFailure(status)
	if err != nil {
		if !ok2xx {
			return Grant{}, httpStatusError(status)
		}
		return Grant{}, badResponse(status, "malformed code")
	}
	if df != nil && (!ok2xx || (b.AccessToken == "" && b.JSAPITicket == "")) {
		return Grant{}, &Error{Family: FamilyNew, Status: status, Code: df.Code, Message: df.Message, Class: classify(df.Code)}
	}
	if df == nil {
		if lf, err := b.LegacyFailure(); err == nil && lf != nil {
			return Grant{}, legacyError(status, lf, b.SubMsg)
		}
	}
	if !ok2xx {
		return Grant{}, httpStatusError(status)
	}
	value := b.AccessToken
	if f.new == ticketField.new {
		value = b.JSAPITicket
	}
	return grant(status, value, b.ExpireIn, f.new)
}

// legacyError is the client's error for a legacy failure: for a /topapi-style errcode 88 the code is
// the sub_code and the message the sub_msg, when DingTalk sent them.
func legacyError(status int, f *dingtalkapi.Failure, subMsg string) *Error {
	code, msg := f.Cause(), f.Message
	if code != f.Code && subMsg != "" {
		msg = subMsg
	}
	return &Error{Family: FamilyLegacy, Status: status, Code: code, Message: msg, Class: classify(code)}
}

// grant checks a success body's value and lifetime.
func grant(status int, value string, rawExpires json.RawMessage, name string) (Grant, *Error) {
	if value == "" {
		return Grant{}, badResponse(status, "empty "+name)
	}
	secs, ok := jsonSeconds(rawExpires)
	if !ok {
		return Grant{}, badResponse(status, "missing or malformed expiry")
	}
	if secs <= 0 || secs > int64(MaxExpiresIn/time.Second) {
		return Grant{}, badResponse(status, fmt.Sprintf("expiry out of range: %d s", secs))
	}
	return Grant{Value: value, ExpiresIn: time.Duration(secs) * time.Second}, nil
}

// jsonSeconds reads a whole number of seconds sent as a JSON number or numeric string.
func jsonSeconds(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(strings.TrimSpace(s))
	}
	if len(raw) == 0 {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	// Accept 7200.0, reject 7200.5 and anything that is not a finite number.
	fl, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(fl, 0) || math.IsNaN(fl) || fl != math.Trunc(fl) || math.Abs(fl) > 1e15 {
		return 0, false
	}
	return int64(fl), true
}

func badResponse(status int, msg string) *Error {
	return &Error{Family: FamilyTransport, Status: status, Code: CodeBadResponse, Message: msg, Class: ClassUnavailable}
}

func httpStatusError(status int) *Error {
	return &Error{Family: FamilyTransport, Status: status, Code: "http_" + strconv.Itoa(status), Message: http.StatusText(status), Class: ClassUnavailable}
}
