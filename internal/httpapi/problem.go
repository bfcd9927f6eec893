package httpapi

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/proxyrule"
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
	codeRequestTooLarge     = "request_too_large"
	codeUpstreamUnreachable = "upstream_unreachable"
	codeUpstreamTimeout     = "upstream_timeout"
	codeInternal            = "internal"
)

// problemFor maps an error from the broker (or request parsing) to its problem. This is the one place
// where error classes become HTTP statuses.
func problemFor(err error) problem {
	var (
		rejected    *broker.RejectedError
		unavailable *broker.UnavailableError
		cooldown    *broker.CooldownError
		bad         *badRequestError
		banned      *proxy.BannedError
	)
	switch {
	// The proxy's own failures (proxy.go); DingTalk's answers pass through untouched.
	case errors.Is(err, proxyrule.ErrBadPath):
		return problem{status: http.StatusBadRequest, code: codeBadRequest, detail: "the DingTalk path must not have empty, . or .. segments, an encoded /, a backslash or ;"}
	case errors.Is(err, errProxyDenied):
		return problem{status: http.StatusForbidden, code: codeForbidden, detail: "no proxy rule of this client allows this call"}
	case errors.Is(err, proxy.ErrRequestBody):
		return problem{status: http.StatusBadRequest, code: codeBadRequest, detail: "the request body could not be read"}
	case errors.Is(err, proxy.ErrBodyTooLarge):
		return problem{status: http.StatusRequestEntityTooLarge, code: codeRequestTooLarge, detail: "the request body is larger than proxy.max_body"}
	case errors.Is(err, proxy.ErrUpstreamTimeout):
		return problem{status: http.StatusGatewayTimeout, code: codeUpstreamTimeout, detail: "DingTalk did not answer within proxy.timeout"}
	case errors.Is(err, proxy.ErrUpstreamUnreachable):
		return problem{status: http.StatusBadGateway, code: codeUpstreamUnreachable, detail: "DingTalk could not be reached"}
	case errors.As(err, &banned):
		return problem{status: http.StatusServiceUnavailable, code: codeUpstreamUnavailable,
			detail: "DingTalk blocks this egress IP; every proxied call pauses", upstreamCode: "ip_ban", retryAfter: banned.RetryAfter}
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
			detail: "DingTalk rejected the app's credentials or this egress IP", upstreamCode: rejected.Upstream.Code}
	case errors.As(err, &unavailable):
		p := problem{status: http.StatusServiceUnavailable, code: codeUpstreamUnavailable,
			detail: "no valid token and DingTalk is failing", retryAfter: unavailable.RetryAfter}
		if unavailable.Upstream != nil {
			p.upstreamCode = unavailable.Upstream.Code
		}
		return p
	case errors.As(err, &cooldown):
		return problem{status: http.StatusTooManyRequests, code: codeRateLimited,
			detail:     "this token was checked moments ago; the problem is likely elsewhere (permissions, wrong app, missing header)",
			retryAfter: cooldown.RetryAfter}
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
