package httpapi

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/signature"
)

// problem is an RFC 9457 problem document with tokend's extra members.
type problem struct {
	status       int
	code         string
	detail       string
	upstreamCode string
	retryAfter   time.Duration
}

// The problem codes of the contract.
const (
	codeBadRequest          = "bad_request"
	codeUnauthenticated     = "unauthenticated"
	codeForbidden           = "forbidden"
	codeAppNotFound         = "app_not_found"
	codeNotFound            = "not_found"
	codeMethodNotAllowed    = "method_not_allowed"
	codeRateLimited         = "rate_limited"
	codeUpstreamRejected    = "upstream_rejected"
	codeUpstreamUnavailable = "upstream_unavailable"
	codeInternal            = "internal"
)

// problemFor maps an error from the broker (or request parsing) to its problem. This is the one place
// where error classes become HTTP statuses.
func problemFor(err error) problem {
	var (
		rejected    *broker.RejectedError
		unavailable *broker.UnavailableError
		cooldown    *broker.CooldownError
		limited     *broker.RateLimitedError
		bad         *badRequestError
	)
	switch {
	case errors.As(err, &bad):
		return problem{status: http.StatusBadRequest, code: codeBadRequest, detail: bad.msg}
	case errors.Is(err, signature.ErrBadURL):
		return problem{status: http.StatusBadRequest, code: codeBadRequest, detail: "url must be an absolute http(s) page URL"}
	case errors.Is(err, broker.ErrUnknownApp):
		return problem{status: http.StatusNotFound, code: codeAppNotFound, detail: "no such app"}
	case errors.Is(err, broker.ErrTicketDisabled):
		return problem{status: http.StatusNotFound, code: codeAppNotFound, detail: "jsapi_ticket is not enabled for this app"}
	case errors.As(err, &rejected):
		return problem{status: http.StatusBadGateway, code: codeUpstreamRejected,
			detail: "DingTalk rejected the app's credentials or this egress IP", upstreamCode: rejected.Code}
	case errors.As(err, &unavailable):
		return problem{status: http.StatusServiceUnavailable, code: codeUpstreamUnavailable,
			detail: "no valid token and DingTalk is failing", retryAfter: unavailable.RetryAfter, upstreamCode: unavailable.Code}
	case errors.As(err, &cooldown):
		return problem{status: http.StatusTooManyRequests, code: codeRateLimited,
			detail:     "this token was checked moments ago; the problem is likely elsewhere (permissions, wrong app, missing header)",
			retryAfter: cooldown.RetryAfter}
	case errors.As(err, &limited):
		return problem{status: http.StatusTooManyRequests, code: codeRateLimited,
			detail: "the shared budget of calls to DingTalk is spent for now", retryAfter: limited.RetryAfter}
	default:
		// Context ends and anything unforeseen: the caller may retry; the detail stays generic.
		return problem{status: http.StatusServiceUnavailable, code: codeUpstreamUnavailable,
			detail: "the token could not be obtained in time", retryAfter: time.Second}
	}
}

// badRequestError is a client mistake in the request itself; msg is safe to return.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return e.msg }

func writeProblem(w http.ResponseWriter, p problem) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	if p.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="tokend"`)
	}
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(p.retryAfter.Seconds()))))
	}
	w.WriteHeader(p.status)
	buf := make([]byte, 0, 256)
	buf = append(buf, `{"type":"about:blank","title":`...)
	buf = appendString(buf, http.StatusText(p.status))
	buf = append(buf, `,"status":`...)
	buf = strconv.AppendInt(buf, int64(p.status), 10)
	buf = append(buf, `,"code":`...)
	buf = appendString(buf, p.code)
	buf = append(buf, `,"detail":`...)
	buf = appendString(buf, p.detail)
	if p.upstreamCode != "" {
		buf = append(buf, `,"upstream_code":`...)
		buf = appendString(buf, p.upstreamCode)
	}
	buf = append(buf, "}\n"...)
	_, _ = w.Write(buf)
}
