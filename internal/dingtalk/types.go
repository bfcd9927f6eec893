package dingtalk

import (
	"fmt"
	"time"
)

// AppType is how an app authenticates to DingTalk.
type AppType string

const (
	// Internal is an internal app: client_id (appKey) and client secret (appSecret).
	Internal AppType = "dingtalk"
	// Corp is an organization-authorized app: CorpId and CorpSecret, always on the legacy API.
	Corp AppType = "dingtalk_corp"
)

// String returns the type as written in the configuration ("dingtalk", "dingtalk_corp").
func (t AppType) String() string { return string(t) }

// API is the DingTalk API family used for an app's token and ticket calls.
type API string

const (
	// V1 is the new API on the api host: POST /v1.0/oauth2/accessToken, POST /v1.0/oauth2/jsapiTickets.
	V1 API = "v1"
	// Legacy is the old API on the oapi host: GET /gettoken, GET /get_jsapi_ticket.
	Legacy API = "legacy"
)

// String returns the API as written in the configuration ("v1", "legacy").
func (a API) String() string { return string(a) }

// App is what the client needs to fetch an app's access token.
type App struct {
	Type AppType
	// API is ignored for Corp apps, which always use Legacy.
	API API
	// Key is the appKey (client_id) of an Internal app or the CorpId of a Corp app.
	Key string
	// Secret is the appSecret or CorpSecret. It never appears in errors or logs.
	Secret string
}

// Grant is a credential as DingTalk returned it.
type Grant struct {
	Value string
	// ExpiresIn is DingTalk's expireIn/expires_in, already checked to be sane: > 0 and ≤ MaxExpiresIn
	// (24 h), whole seconds.
	ExpiresIn time.Duration
}

// Family says which API envelope a failure came in.
type Family string

const (
	FamilyLegacy    Family = "legacy"    // HTTP 200 with non-zero errcode
	FamilyNew       Family = "new"       // HTTP 4xx/5xx with {"code","message","requestid"}
	FamilyTransport Family = "transport" // no DingTalk answer: network error, timeout, HTML page, bad JSON
)

// Class is what a failure means for the broker.
type Class int

const (
	// ClassUnavailable: busy, 5xx, timeout, network error, malformed or absurd answer. Retry with
	// capped exponential back-off.
	ClassUnavailable Class = iota
	// ClassRateLimited: a QPS limit (90018, 90002, Forbidden.AccessDenied.QpsLimit*). Back off ≥ 1 s.
	ClassRateLimited
	// ClassBanned: the per-IP block (HTML page or {"status":1111,"punish":"deny"}). Stop all calls for ~5 min.
	ClassBanned
	// ClassCredentials: wrong appKey/appSecret or corpid/corpsecret (40096, 40089, invalidClientIdOrSecret).
	ClassCredentials
	// ClassIPNotAllowed: the egress IP is not in the app's allowlist (60020, Forbidden.AccessDenied.IpNotInWhiteList).
	ClassIPNotAllowed
	// ClassBadRequest: the request was built wrongly (40035, 41001, Missingbody, ...): a bug.
	ClassBadRequest
	// ClassInvalidToken: the access token passed (ticket calls) is invalid (40014, 42001, 40001,
	// InvalidAuthentication).
	ClassInvalidToken
)

// Error is every failure of a DingTalk call. It never contains a secret or a token.
type Error struct {
	Family Family
	// Status is the HTTP status, 0 when there was no HTTP answer.
	Status int
	// Code is DingTalk's code as a string ("40096", "invalidClientIdOrSecret"), or for transport
	// failures one of "timeout", "network", "http_<status>", "ip_ban", "bad_response" (and
	// "bad_request", ClassBadRequest, when the App or API given to the client is unknown: no call is
	// made). For a /topapi-style errcode 88 it is the sub_code.
	Code string
	// Message is DingTalk's errmsg/message, scrubbed of secrets; for transport failures a short cause.
	Message string
	Class   Class

	// cause is context.Canceled or context.DeadlineExceeded when the caller's context ended the
	// call, nil otherwise. Nothing else is kept: transport errors can carry the request URL, and
	// with it a secret.
	cause error
}

func (e *Error) Error() string {
	return fmt.Sprintf("dingtalk %s error %s: %s", e.Family, e.Code, e.Message)
}

// Unwrap returns context.Canceled or context.DeadlineExceeded when the caller's context ended the
// call (so errors.Is works with them), and nil otherwise. It never exposes a transport error.
func (e *Error) Unwrap() error { return e.cause }

// Retryable reports whether trying again later may succeed without an operator's action.
func (e *Error) Retryable() bool {
	switch e.Class {
	case ClassUnavailable, ClassRateLimited, ClassBanned, ClassInvalidToken:
		return true
	}
	return false
}
