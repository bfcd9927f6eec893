package broker

import (
	"context"
	"sync"
	"time"
)

// budget paces calls to DingTalk: a token bucket of rate calls per second with a burst of one
// second's worth. It measures real time whatever clock the broker is given: pacing is about real calls.
type budget struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBudget(rate float64) *budget {
	burst := max(rate, 1)
	return &budget{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// wait takes one call from the budget, waiting (bounded by ctx) for it to refill when spent.
func (b *budget) wait(ctx context.Context) error {
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens--
	deficit := -b.tokens
	b.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / b.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		b.tokens++ // give the unused call back
		b.mu.Unlock()
		return ctx.Err()
	}
}
