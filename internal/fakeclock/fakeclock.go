// Package fakeclock is a clock that tests move by hand, for the code that takes a
// now func() time.Time (the store, the fake DingTalk, the flows).
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a time that only Advance moves. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock standing at t.
func New(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time; its method value is what Options.Now fields take.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
