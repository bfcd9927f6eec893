package flowerr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/flowerr"
)

func TestClassify(t *testing.T) {
	refused := func(de *dingtalk.Error) error { return &flowerr.InvalidGrantError{UpstreamCode: de.Code} }
	for _, tc := range []struct {
		name   string
		err    error
		want   string // type of the result
		banned bool
	}{
		{"ban page", &dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 403, Code: dingtalk.CodeIPBan, Class: dingtalk.ClassBanned}, "unavailable", true},
		{"bad app secret", &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: "invalidClientIdOrSecret", Class: dingtalk.ClassCredentials}, "rejected", false},
		{"ip not allowed", &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 403, Code: "Forbidden.AccessDenied.IpNotInWhiteList", Class: dingtalk.ClassIPNotAllowed}, "rejected", false},
		{"qps limit", &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 403, Code: "Forbidden.AccessDenied.QpsLimitForApi", Class: dingtalk.ClassRateLimited}, "unavailable", false},
		{"used code", &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: "invalidAuthCode"}, "invalid_grant", false},
		{"4xx without a code", &dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 401, Code: "http_401"}, "invalid_grant", false},
		{"5xx", &dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 502, Code: "http_502"}, "unavailable", false},
		{"busy", &dingtalk.Error{Family: dingtalk.FamilyNew, Status: 503, Code: "systemBusy"}, "unavailable", false},
		{"timeout", &dingtalk.Error{Family: dingtalk.FamilyTransport, Code: dingtalk.CodeTimeout}, "unavailable", false},
		{"not dingtalk's", fmt.Errorf("call: %w", context.DeadlineExceeded), "unavailable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, banned := flowerr.Classify(tc.err, refused)
			var (
				un  *flowerr.UnavailableError
				rej *flowerr.RejectedError
				ig  *flowerr.InvalidGrantError
			)
			got := "other"
			switch {
			case errors.As(out, &un):
				got = "unavailable"
			case errors.As(out, &rej):
				got = "rejected"
			case errors.As(out, &ig):
				got = "invalid_grant"
			}
			if got != tc.want || banned != tc.banned {
				t.Fatalf("Classify = %s (%v), banned %v; want %s, %v", got, out, banned, tc.want, tc.banned)
			}
		})
	}
	// Without a rule for 4xx answers, they are the operator's problem.
	out, _ := flowerr.Classify(&dingtalk.Error{Family: dingtalk.FamilyNew, Status: 400, Code: "invalidParameter"}, nil)
	var rej *flowerr.RejectedError
	if !errors.As(out, &rej) {
		t.Fatalf("4xx without a rule: %v", out)
	}
}
