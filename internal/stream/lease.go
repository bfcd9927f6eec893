package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Leases is the store side of a lease: store.Memory and store.Redis implement it.
type Leases interface {
	// TryLease takes the lease for owner for ttl if it is free, or extends it if owner holds it, and
	// reports whether owner holds it afterwards.
	TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// ReleaseLease ends the lease if owner holds it.
	ReleaseLease(ctx context.Context, name, owner string) error
}

// Lease is a held lease: a handle, not an owner string threaded through calls.
type Lease struct {
	leases Leases
	name   string
	owner  string
	ttl    time.Duration
}

// Obtain takes the lease called name for ttl if nobody holds it. It returns nil and no error when
// another holder has it.
func Obtain(ctx context.Context, leases Leases, name string, ttl time.Duration) (*Lease, error) {
	var b [16]byte
	rand.Read(b[:])
	l := &Lease{leases: leases, name: name, owner: hex.EncodeToString(b[:]), ttl: ttl}
	held, err := leases.TryLease(ctx, name, l.owner, ttl)
	if err != nil {
		return nil, fmt.Errorf("obtain lease %s: %w", name, err)
	}
	if !held {
		return nil, nil
	}
	return l, nil
}

// ErrLost is returned by Renew when another holder has the lease now.
var ErrLost = errors.New("lease held by another")

// Renew extends the lease to its ttl from now. It returns ErrLost when another holder took it (it
// lapsed), or the store's error when the store could not tell.
func (l *Lease) Renew(ctx context.Context) error {
	held, err := l.leases.TryLease(ctx, l.name, l.owner, l.ttl)
	switch {
	case err != nil:
		return fmt.Errorf("renew lease %s: %w", l.name, err)
	case !held:
		return fmt.Errorf("renew lease %s: %w", l.name, ErrLost)
	}
	return nil
}

// Release ends the lease if it is still held, so another replica may take it at once.
func (l *Lease) Release(ctx context.Context) error {
	if err := l.leases.ReleaseLease(ctx, l.name, l.owner); err != nil {
		return fmt.Errorf("release lease %s: %w", l.name, err)
	}
	return nil
}

// DefaultLeaseTTL is the lease lifetime when LeaderOptions.TTL is not set: a dead leader is replaced
// within about this long.
const DefaultLeaseTTL = 15 * time.Second

// LeaderOptions configures RunLeader.
type LeaderOptions struct {
	Leases Leases
	// Name names the lease, e.g. "stream:<app>".
	Name string
	// TTL is the lease's lifetime; the leader renews it every TTL/3 and followers try to take it as
	// often. Default DefaultLeaseTTL.
	TTL time.Duration
	// Logger gets leadership changes; default discard.
	Logger *slog.Logger
}

// RunLeader runs lead whenever this replica holds the lease, until ctx ends; then it stops lead,
// releases the lease and returns. lead's context ends when leadership is lost (another replica took
// the lease after it lapsed), after which RunLeader waits for lead to return and competes again.
//
// While the store cannot be reached, a leader keeps leading (it cannot hand over, and a follower
// cannot take over either) and a follower keeps trying. If only the leader lost the store, the lease
// lapses and another replica leads too until the first one reaches the store again and learns it
// lost: for a Stream subscription that is harmless, since the gateway gives each message to one
// connection and what the handlers keep is idempotent and ordered by push time.
func RunLeader(ctx context.Context, o LeaderOptions, lead func(ctx context.Context)) {
	if o.TTL <= 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	every := o.TTL / 3
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, err := Obtain(ctx, o.Leases, o.Name, o.TTL)
		if err != nil && ctx.Err() == nil {
			o.Logger.Warn("lease unavailable", "lease", o.Name, "err", err)
		}
		if l != nil {
			o.Logger.Info("lease obtained: leading", "lease", o.Name)
			holdAndLead(ctx, o, l, every, lead)
			if ctx.Err() != nil {
				return
			}
			o.Logger.Info("lease lost: following", "lease", o.Name)
		}
		t.Reset(every)
	}
}

// holdAndLead runs lead while renewing l, until ctx ends or the lease is lost; then it stops lead,
// waits for it and, on the way out, releases the lease.
func holdAndLead(ctx context.Context, o LeaderOptions, l *Lease, every time.Duration, lead func(ctx context.Context)) {
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stop() // lead returning on its own ends the leadership too
		lead(lctx)
	}()
	defer func() {
		stop()
		wg.Wait()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := l.Release(rctx); err != nil {
			o.Logger.Warn("lease not released; it lapses on its own", "lease", o.Name, "err", err)
		}
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-lctx.Done():
			return
		case <-t.C:
		}
		err := l.Renew(lctx)
		switch {
		case errors.Is(err, ErrLost):
			return
		case err != nil && lctx.Err() == nil:
			o.Logger.Warn("lease not renewed; leading on", "lease", o.Name, "err", err)
		}
	}
}
