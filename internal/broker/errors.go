package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
)

// Errors returned by Token, Invalidate and Ticket. Match them with errors.Is / errors.As.
var (
	// ErrUnknownApp: no app of that name is configured.
	ErrUnknownApp = errors.New("unknown app")
	// ErrTicketDisabled: the app exists but does not keep a jsapi ticket.
	ErrTicketDisabled = errors.New("jsapi ticket not enabled")
)

// RejectedError means DingTalk refuses the app's credentials or this egress IP, and there is no valid
// token to serve. Retrying soon will not help.
type RejectedError struct {
	// Code is DingTalk's code as a string ("40096", "invalidClientIdOrSecret").
	Code string
	// cause is DingTalk's error as the client returned it, when this replica made the call.
	cause error
}

func (e *RejectedError) Error() string { return "upstream rejected: " + e.Code }
func (e *RejectedError) Unwrap() error { return e.cause }

// UnavailableError means there is no valid token and DingTalk is failing (or the store said to wait,
// or DingTalk bans this egress IP: Code "ip_ban"). RetryAfter is when trying again may succeed.
type UnavailableError struct {
	RetryAfter time.Duration
	// Code is the last failure's code: DingTalk's, or one the client or broker makes ("timeout",
	// "network", "http_502", "ip_ban", "stale_ticket"); "" when there was no failure to name.
	Code  string
	cause error
}

func (e *UnavailableError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("upstream unavailable (retry after %s): %s", e.RetryAfter, e.Code)
	}
	return fmt.Sprintf("upstream unavailable (retry after %s)", e.RetryAfter)
}
func (e *UnavailableError) Unwrap() error { return e.cause }

// CooldownError means the same token was reported invalid again too soon after it was checked.
type CooldownError struct {
	RetryAfter time.Duration
}

func (e *CooldownError) Error() string {
	return fmt.Sprintf("invalidation cool-down (retry after %s)", e.RetryAfter)
}

// RateLimitedError means the shared egress budget (proxy.max_rps, all replicas together) is spent
// for now: the call must not be made. RetryAfter is when the budget has room again.
type RateLimitedError struct {
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("egress budget spent (retry after %s)", e.RetryAfter)
}

// fault is what the broker knows of a failed refresh: DingTalk's answer as the client classified it,
// a note another replica left, a ban, or a ticket handed back dead. It never holds a secret.
type fault struct {
	Class  dingtalk.Class
	Family dingtalk.Family
	Status int
	Code   string
	// Message is a short cause for the log (DingTalk's message, scrubbed by the client).
	Message string
	cause   error
}

func (f *fault) Error() string { return fmt.Sprintf("%s failure %s: %s", f.Family, f.Code, f.Message) }
func (f *fault) Unwrap() error { return f.cause }

// retryable reports whether trying again later may succeed without an operator's action.
func (f *fault) retryable() bool {
	switch f.Class {
	case dingtalk.ClassUnavailable, dingtalk.ClassRateLimited, dingtalk.ClassBanned, dingtalk.ClassInvalidToken:
		return true
	}
	return false
}

// err is the error callers get while the fault holds, for wait more.
func (f *fault) err(wait time.Duration) error {
	if !f.retryable() {
		return &RejectedError{Code: f.Code, cause: f.cause}
	}
	return &UnavailableError{RetryAfter: wait, Code: f.Code, cause: f.cause}
}

// faultOf returns err as a fault when it is one or DingTalk's error, nil otherwise.
func faultOf(err error) *fault {
	var f *fault
	if errors.As(err, &f) {
		return f
	}
	var de *dingtalk.Error
	if errors.As(err, &de) {
		return &fault{Class: de.Class, Family: de.Family, Status: de.Status, Code: de.Code, Message: de.Message, cause: de}
	}
	return nil
}

// banFault is DingTalk's per-IP block, as known from a note or a report.
func banFault() *fault {
	return &fault{Family: dingtalk.FamilyTransport, Code: dingtalk.CodeIPBan, Class: dingtalk.ClassBanned, Message: "egress IP blocked by DingTalk"}
}
