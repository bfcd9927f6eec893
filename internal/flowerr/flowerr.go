// Package flowerr holds the errors shared by the flows beyond app tokens (user tokens, Stream
// tickets, robots), the one rule that turns a DingTalk failure into one of them, and the one way such
// a flow calls DingTalk through the shared egress gate (Call). The HTTP API maps
// these types to problem documents; nothing here knows HTTP. No error carries a secret: DingTalk
// failures arrive already scrubbed (*dingtalk.Error) and only their code is kept for callers.
package flowerr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
)

// Errors for requests that name nothing tokend can serve.
var (
	// ErrUnknown: no app or robot of that name is configured.
	ErrUnknown = errors.New("not configured")
	// ErrUnsupported: the app exists but its type cannot serve this flow (an organization-authorized
	// app has no client id for user tokens or Stream).
	ErrUnsupported = errors.New("not supported for this app type")
)

// BadRequestError is a mistake in the caller's request; Msg is safe to return to it.
type BadRequestError struct{ Msg string }

func (e *BadRequestError) Error() string { return e.Msg }

// InvalidGrantError: DingTalk refused the user's code or refresh token (used, expired, unknown).
type InvalidGrantError struct {
	// UpstreamCode is DingTalk's code, or "http_<status>" when its answer had none.
	UpstreamCode string
}

func (e *InvalidGrantError) Error() string { return "grant refused by dingtalk: " + e.UpstreamCode }

// RejectedError: DingTalk refused the request for a reason an operator must fix (the app's
// credentials, the egress IP, a robot's token or signature, a disabled robot).
type RejectedError struct {
	Upstream *dingtalk.Error
}

func (e *RejectedError) Error() string { return "upstream rejected: " + e.Upstream.Error() }
func (e *RejectedError) Unwrap() error { return e.Upstream }

// UnavailableError: DingTalk is failing, banning this IP, or has paused the target; trying again after
// RetryAfter may succeed.
type UnavailableError struct {
	RetryAfter time.Duration
	// Upstream is the DingTalk failure, if there was one.
	Upstream *dingtalk.Error
	// Reason says why in a few words safe for a caller ("robot blocked by dingtalk").
	Reason string
}

func (e *UnavailableError) Error() string {
	if e.Upstream != nil {
		return fmt.Sprintf("%s (retry after %s): %v", e.Reason, e.RetryAfter, e.Upstream)
	}
	return fmt.Sprintf("%s (retry after %s)", e.Reason, e.RetryAfter)
}

func (e *UnavailableError) Unwrap() error {
	if e.Upstream == nil {
		return nil
	}
	return e.Upstream
}

// RateLimitedError: tokend refused the request to keep a DingTalk limit (a robot's 20 messages per
// minute); nothing was sent. RetryAfter is when a slot frees.
type RateLimitedError struct {
	RetryAfter time.Duration
	Reason     string
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%s (retry after %s)", e.Reason, e.RetryAfter)
}

// BanPause is how long DingTalk's per-IP block lasts.
const BanPause = 5 * time.Minute

// busyRetry is the Retry-After of a failure DingTalk may get over soon (busy, 5xx, timeout).
const busyRetry = time.Second

// Classify turns a failed DingTalk call into a flow error, given what a 4xx refusal means for the
// flow (refused4xx, may be nil: then a 4xx is a RejectedError). It reports banned true when the
// answer was the per-IP block, which the caller must report to the egress gate.
func Classify(err error, refused4xx func(*dingtalk.Error) error) (out error, banned bool) {
	var de *dingtalk.Error
	if !errors.As(err, &de) {
		return &UnavailableError{RetryAfter: busyRetry, Reason: "dingtalk call failed"}, false
	}
	switch {
	case de.Class == dingtalk.ClassBanned:
		return &UnavailableError{RetryAfter: BanPause, Upstream: de, Reason: "dingtalk blocks this egress ip"}, true
	case de.Class == dingtalk.ClassCredentials, de.Class == dingtalk.ClassIPNotAllowed:
		return &RejectedError{Upstream: de}, false
	case de.Class == dingtalk.ClassRateLimited:
		return &UnavailableError{RetryAfter: busyRetry, Upstream: de, Reason: "dingtalk rate limit"}, false
	case de.Status >= 400 && de.Status < 500 && de.Code != dingtalk.CodeTimeout && de.Code != dingtalk.CodeNetwork:
		if refused4xx != nil {
			return refused4xx(de), false
		}
		return &RejectedError{Upstream: de}, false
	default:
		return &UnavailableError{RetryAfter: busyRetry, Upstream: de, Reason: "dingtalk is failing"}, false
	}
}

// Gate is the shared egress budget and IP-ban pause every Part 2 call to DingTalk obeys. Egress
// returns nil when a call may be made now, or the error to give the caller (rate limited, IP ban) as
// it is; ReportBan tells every replica that DingTalk answered with the per-IP block.
type Gate interface {
	Egress(ctx context.Context) error
	ReportBan(ctx context.Context)
}

// Call makes one DingTalk call of a flow: it asks gate for egress, runs call bounded by timeout, and
// turns a failure into a flow error (Classify, with refused4xx), reporting a per-IP block to gate on a
// context that outlives the caller's. gated is true when the gate refused the call: err is then the
// gate's error as it is, and call was not run.
func Call(ctx context.Context, gate Gate, timeout time.Duration, call func(context.Context) error, refused4xx func(*dingtalk.Error) error) (gated bool, err error) {
	if err := gate.Egress(ctx); err != nil {
		return true, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := call(cctx); err != nil {
		out, banned := Classify(err, refused4xx)
		if banned {
			gate.ReportBan(context.WithoutCancel(ctx))
		}
		return false, out
	}
	return false, nil
}
