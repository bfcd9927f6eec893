package client

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Sentinels for the problem codes of tokend's API, for errors.Is. An *Error matches the sentinel of
// its Code; errors from local argument checks match ErrBadRequest.
var (
	// ErrBadRequest: the request was malformed (code "bad_request", HTTP 400), or an argument was
	// rejected before any request was made.
	ErrBadRequest = errors.New("bad request")
	// ErrUnauthenticated: the key is missing or unknown (code "unauthenticated", HTTP 401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the key is valid but may not use this app (code "forbidden", HTTP 403). tokend
	// answers so whether or not the app exists.
	ErrForbidden = errors.New("forbidden")
	// ErrAppNotFound: no such app, or the app keeps no jsapi ticket (code "app_not_found", HTTP 404).
	ErrAppNotFound = errors.New("app not found")
	// ErrRateLimited: the same token was reported invalid again too soon (code "rate_limited", HTTP
	// 429). The token is fine as far as DingTalk's token API is concerned: look for the problem
	// elsewhere (permissions, wrong app, missing header). Error.RetryAfter says when to report again.
	// From RobotSend: the robot sent its 20 messages of the last minute; the message was not sent.
	ErrRateLimited = errors.New("rate limited")
	// ErrUpstreamRejected: DingTalk refuses the app's credentials or tokend's egress IP (code
	// "upstream_rejected", HTTP 502); Error.UpstreamCode has DingTalk's code. Retrying soon will not
	// help; an operator must act.
	ErrUpstreamRejected = errors.New("upstream rejected")
	// ErrUpstreamUnavailable: tokend has no valid token and DingTalk is failing (code
	// "upstream_unavailable", HTTP 503). Retry after Error.RetryAfter.
	ErrUpstreamUnavailable = errors.New("upstream unavailable")
	// ErrInvalidGrant: DingTalk refused a user's login code or refresh token: used, expired or
	// unknown (code "invalid_grant", HTTP 400); Error.UpstreamCode has DingTalk's code.
	ErrInvalidGrant = errors.New("invalid grant")
)

// Problem codes tokend sends in the "code" member of its problem documents.
const (
	CodeBadRequest          = "bad_request"
	CodeUnauthenticated     = "unauthenticated"
	CodeForbidden           = "forbidden"
	CodeAppNotFound         = "app_not_found"
	CodeRateLimited         = "rate_limited"
	CodeUpstreamRejected    = "upstream_rejected"
	CodeUpstreamUnavailable = "upstream_unavailable"
	CodeInvalidGrant        = "invalid_grant"
)

// Error is an answer from tokend other than 200 OK, parsed from its application/problem+json body
// when it has one. It never contains the client key or a token. Match it with errors.As, or its
// class with errors.Is and the sentinels above.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the problem code ("forbidden", "upstream_rejected", ...; see the Code constants), or ""
	// when the answer was not a problem document (for example a proxy's error page).
	Code string
	// Detail is the problem's human-readable explanation, or the status text.
	Detail string
	// UpstreamCode is DingTalk's code, as a string ("40096", "invalidClientIdOrSecret"), for
	// upstream_rejected and upstream_unavailable problems.
	UpstreamCode string
	// RetryAfter is the Retry-After header's delay, 0 when there was none.
	RetryAfter time.Duration
}

// Error returns "<status> <code>: <detail>" with the upstream code and retry delay when present.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.UpstreamCode != "" {
		b.WriteString(" (upstream code ")
		b.WriteString(e.UpstreamCode)
		b.WriteString(")")
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	return b.String()
}

// Is reports whether target is the sentinel of e's Code, so that errors.Is(err, ErrForbidden) works.
func (e *Error) Is(target error) bool {
	var code string
	switch target {
	case ErrBadRequest:
		code = CodeBadRequest
	case ErrUnauthenticated:
		code = CodeUnauthenticated
	case ErrForbidden:
		code = CodeForbidden
	case ErrAppNotFound:
		code = CodeAppNotFound
	case ErrRateLimited:
		code = CodeRateLimited
	case ErrUpstreamRejected:
		code = CodeUpstreamRejected
	case ErrUpstreamUnavailable:
		code = CodeUpstreamUnavailable
	case ErrInvalidGrant:
		code = CodeInvalidGrant
	default:
		return false
	}
	return e.Code == code
}
