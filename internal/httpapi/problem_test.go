package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/signature"
)

// TestProblemFor checks the one mapping from error classes to statuses and problem codes, wrapped
// errors included, and that no two classes share a detail text by accident.
func TestProblemFor(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{errUnauthenticated, 401, codeUnauthenticated},
		{errForbidden, 403, codeForbidden},
		{errNoRoute, 404, codeNotFound},
		{errMethodNotAllowed, 405, codeMethodNotAllowed},
		{errPanic, 500, codeInternal},
		{&clientLimitError{retryAfter: 2 * time.Second}, 429, codeRateLimited},
		{&badRequestError{"url is required"}, 400, codeBadRequest},
		{fmt.Errorf("normalize: %w", signature.ErrBadURL), 400, codeBadRequest},
		{broker.ErrUnknownApp, 404, codeAppNotFound},
		{broker.ErrTicketDisabled, 404, codeAppNotFound},
		{&broker.UnavailableError{RetryAfter: time.Second}, 503, codeUpstreamUnavailable},
		{&broker.CooldownError{RetryAfter: time.Second}, 429, codeRateLimited},
		{context.DeadlineExceeded, 503, codeUpstreamUnavailable},
	}
	details := map[string]error{}
	for _, c := range cases {
		p := problemFor(fmt.Errorf("wrapped: %w", c.err))
		if p.status != c.status || p.code != c.code || p.detail == "" {
			t.Errorf("problemFor(%v) = %d %s %q, want %d %s", c.err, p.status, p.code, p.detail, c.status, c.code)
		}
		if other, dup := details[p.detail]; dup && !errors.Is(c.err, context.DeadlineExceeded) {
			t.Errorf("%v and %v share the detail %q", c.err, other, p.detail)
		}
		details[p.detail] = c.err
	}
	if p := problemFor(&clientLimitError{retryAfter: 1500 * time.Millisecond}); p.retryAfter != 1500*time.Millisecond {
		t.Errorf("rate limit retry after %v", p.retryAfter)
	}
}

func TestWriteProblem(t *testing.T) {
	w := httptest.NewRecorder()
	writeProblem(w, errUnauthenticated)
	if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" ||
		w.Header().Get("Content-Type") != "application/problem+json" ||
		!strings.Contains(w.Body.String(), `"code":"unauthenticated"`) {
		t.Errorf("401: %d %v %s", w.Code, w.Header(), w.Body)
	}
	w = httptest.NewRecorder()
	writeProblem(w, &clientLimitError{retryAfter: 1100 * time.Millisecond})
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "2" {
		t.Errorf("429: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}
