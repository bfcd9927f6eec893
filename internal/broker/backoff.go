package broker

import (
	"math/rand/v2"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
)

// banJitter spreads the entries' resumption after a ban.
const banJitter = 10 * time.Second

// retryAfter is the policy after a failed fetch: how long to wait before the next call, and the count
// of consecutive retryable failures afterwards. A ban waits it out (plus jitter); a failure retrying
// will not fix (credentials, IP allowlist) waits failRetry; others back off (see backoff).
func retryAfter(f *fault, attempts int, remaining, failRetry time.Duration) (time.Duration, int) {
	switch {
	case f.Class == dingtalk.ClassBanned:
		return banPause + jitter(banJitter), 0
	case !f.retryable():
		return failRetry, 0
	}
	attempts++
	return backoff(attempts, f.Class, remaining), attempts
}

// backoff is the wait before retry number attempts after a retryable failure: exponential from 1 s,
// with jitter, capped at a quarter of the time the served token has left (between 1 s and 60 s; 10 s
// when there is no valid token), so that a short outage inside the margin is retried often enough
// to never cost a client an error.
func backoff(attempts int, class dingtalk.Class, remaining time.Duration) time.Duration {
	limit := 10 * time.Second
	if remaining > 0 {
		limit = min(max(remaining/4, time.Second), time.Minute)
	}
	d := time.Second << min(attempts-1, 10)
	d = min(d, limit)
	d = d/2 + jitter(d/2)
	if class == dingtalk.ClassRateLimited && d < time.Second {
		d = time.Second
	}
	return d
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
