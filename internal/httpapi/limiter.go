package httpapi

import (
	"sync"
	"time"
)

// limiter is a token bucket: rate tokens a second, holding at most burst. Safe for concurrent use.
type limiter struct {
	mu     sync.Mutex
	now    func() time.Time
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	b := float64(max(burst, 1))
	return &limiter{now: now, rate: rate, burst: b, tokens: b, last: now()}
}

// take spends one token and returns 0, or returns how long until one is available (spending none).
func (l *limiter) take() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if elapsed := now.Sub(l.last).Seconds(); elapsed > 0 {
		l.tokens = min(l.burst, l.tokens+elapsed*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return 0
	}
	return time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
}
