package broker

import (
	"testing"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
)

func TestRetryAfter(t *testing.T) {
	busy := &fault{Class: dingtalk.ClassUnavailable, Code: "systemBusy"}
	qps := &fault{Class: dingtalk.ClassRateLimited, Code: "90018"}
	creds := &fault{Class: dingtalk.ClassCredentials, Code: "40096"}
	for _, tc := range []struct {
		name         string
		f            *fault
		attempts     int
		remaining    time.Duration
		min, max     time.Duration
		wantAttempts int
	}{
		{"first busy, no token", busy, 0, 0, 500 * time.Millisecond, time.Second, 1},
		{"third busy, no token", busy, 2, 0, 2 * time.Second, 4 * time.Second, 3},
		{"many busy, no token: capped at 10 s", busy, 20, 0, 5 * time.Second, 10 * time.Second, 21},
		{"many busy, token for hours: capped at 60 s", busy, 20, 3 * time.Hour, 30 * time.Second, time.Minute, 21},
		{"many busy, token for 2 min: a quarter of it", busy, 20, 2 * time.Minute, 15 * time.Second, 30 * time.Second, 21},
		{"many busy, token for 2 s: at least 1 s", busy, 20, 2 * time.Second, 500 * time.Millisecond, time.Second, 21},
		{"rate limited: never under 1 s", qps, 0, 0, time.Second, time.Second, 1},
		{"credentials: the slow retry", creds, 5, time.Hour, 30 * time.Second, 30 * time.Second, 0},
		{"ban: the pause and its jitter", banFault(), 3, time.Hour, banPause, banPause + banJitter, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 50 { // jitter: every draw within bounds
				d, n := retryAfter(tc.f, tc.attempts, tc.remaining, 30*time.Second)
				if d < tc.min || d > tc.max || n != tc.wantAttempts {
					t.Fatalf("retryAfter = %v, %d attempts; want within [%v, %v], %d attempts", d, n, tc.min, tc.max, tc.wantAttempts)
				}
			}
		})
	}
}
