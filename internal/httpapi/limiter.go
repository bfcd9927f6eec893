package httpapi

import (
	"time"

	"golang.org/x/time/rate"
)

// limiter is a client's request rate limit: a token bucket of rate tokens a second holding at most
// burst, on the API's clock. Safe for concurrent use.
type limiter struct {
	b   *rate.Limiter
	now func() time.Time
}

func newLimiter(rps float64, burst int, now func() time.Time) *limiter {
	return &limiter{b: rate.NewLimiter(rate.Limit(rps), max(burst, 1)), now: now}
}

// take spends one token and returns 0, or returns how long until one is available (spending none).
func (l *limiter) take() time.Duration {
	now := l.now()
	r := l.b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}
