package httpapi

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
)

// TestRateLimitedMapsTo429: the egress budget spent is 429 rate_limited with Retry-After.
func TestRateLimitedMapsTo429(t *testing.T) {
	p := problemFor(fmt.Errorf("proxy: %w", &broker.RateLimitedError{RetryAfter: 250 * time.Millisecond}))
	if p.status != http.StatusTooManyRequests || p.code != codeRateLimited || p.retryAfter != 250*time.Millisecond {
		t.Fatalf("problem %+v, want 429 %s with the RetryAfter", p, codeRateLimited)
	}
}
