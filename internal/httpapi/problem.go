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
	codeCorpNotFound        = "corp_not_found"
	codeSuiteTicketMissing  = "suite_ticket_missing"
)

// The HTTP layer's own failures, mapped by problemFor like the broker's. Their texts are the details
// clients see.
var (
	errUnauthenticated  = errors.New("a valid bearer key (or client certificate) is required")
	errForbidden        = errors.New("this client may not use this app")
	errNoRoute          = errors.New("no such route")
	errMethodNotAllowed = errors.New("method not allowed on this route")
	errPanic            = errors.New("internal error")
)

// clientLimitError means the client exceeded its own request rate limit on this replica.
type clientLimitError struct{ retryAfter time.Duration }

func (e *clientLimitError) Error() string { return "this client's request rate limit is exceeded" }

// badRequestError is a client mistake in the request itself; msg is safe to return.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return e.msg }

// problemFor maps an error from the broker, from request parsing or from the HTTP layer itself to its
// problem. This is the one place where error classes become HTTP statuses and problem codes.
func problemFor(err error) problem {
	var (
		rejected    *broker.RejectedError
		suiteTicket *broker.SuiteTicketError
		unavailable *broker.UnavailableError
		cooldown    *broker.CooldownError
		limited     *clientLimitError
		spent       *broker.RateLimitedError
		bad         *badRequestError
		banned      *proxy.BannedError
	)
	if p, ok := flowProblem(err); ok { // user tokens, Stream tickets, robots (flows.go)
		return p
	}
	switch {
	case errors.Is(err, errUnauthenticated):
		return problem{status: http.StatusUnauthorized, code: codeUnauthenticated, detail: err.Error()}
	case errors.Is(err, errForbidden):
		return problem{status: http.StatusForbidden, code: codeForbidden, detail: err.Error()}
	case errors.Is(err, errNoRoute):
		return problem{status: http.StatusNotFound, code: codeNotFound, detail: err.Error()}
	case errors.Is(err, errMethodNotAllowed):
		return problem{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed, detail: err.Error()}
	case errors.Is(err, errPanic):
		return problem{status: http.StatusInternalServerError, code: codeInternal, detail: err.Error()}
	case errors.As(err, &limited):
		return problem{status: http.StatusTooManyRequests, code: codeRateLimited, detail: limited.Error(), retryAfter: limited.retryAfter}
	// The proxy's own failures (proxy.go); DingTalk's answers pass through untouched.
	case errors.Is(err, proxyrule.ErrBadPath):
		return problem{status: http.StatusBadRequest, code: codeBadRequest, detail: "the DingTalk path must not have empty, . or .. segments, an encoded /, a backslash or ;"}
	case errors.Is(err, errProxyDenied):
		return problem{status: http.StatusForbidden, code: codeForbidden, detail: err.Error()}
	case errors.Is(err, errNoFamily), errors.Is(err, errProxyDisabled):
		return problem{status: http.StatusNotFound, code: codeNotFound, detail: err.Error()}
	case errors.Is(err, errProxyMethod):
		return problem{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed, detail: err.Error()}
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
	case errors.Is(err, broker.ErrCorpNotFound):
		return problem{status: http.StatusNotFound, code: codeCorpNotFound,
			detail: "this corp has not authorized the app (or withdrew its authorization)"}
	case errors.As(err, &suiteTicket):
		return problem{status: http.StatusServiceUnavailable, code: codeSuiteTicketMissing,
			detail: "no suite ticket DingTalk accepts has been pushed yet", retryAfter: suiteTicket.RetryAfter}
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
	case errors.As(err, &spent):
		return problem{status: http.StatusTooManyRequests, code: codeRateLimited,
			detail: "the shared budget of calls to DingTalk is spent for now", retryAfter: spent.RetryAfter}
	default:
		// Context ends and anything unforeseen: the caller may retry; the detail stays generic.
		return problem{status: http.StatusServiceUnavailable, code: codeUpstreamUnavailable,
			detail: "the token could not be obtained in time", retryAfter: time.Second}
	}
}

// writeProblem writes err as its problem document (see problemFor).
func writeProblem(w http.ResponseWriter, err error) {
	p := problemFor(err)
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
