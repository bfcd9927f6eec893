package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// storeDownAfter is how many store operations in a row must time out before the replica treats the
// store as down and refreshes alone: one slow answer is not an outage.
const storeDownAfter = 3

// lease is one hold of a credential's refresh lock. Each hold has an owner string of its own, so a
// late release (after the lock lapsed and was taken again, by another replica or another flight of
// this one) deletes nothing but itself.
type lease struct {
	b     *Broker
	k     token.Key
	owner string
}

// lock tries k's refresh lock for ttl. It returns a lease when it got the lock, nil when another
// holds it. On a store error the lock may have been set all the same (the answer was lost on the
// way back): it is released at once rather than left to lapse as an orphan.
func (b *Broker) lock(ctx context.Context, k token.Key, ttl time.Duration) (*lease, error) {
	raw := make([]byte, 12)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	l := &lease{b: b, k: k, owner: hex.EncodeToString(raw)}
	sctx, cancel := context.WithTimeout(ctx, b.storeTimeout)
	defer cancel()
	got, err := b.store.TryLock(sctx, k, l.owner, ttl)
	if err != nil {
		b.storeFailed(err)
		l.release()
		return nil, err
	}
	b.storeOK()
	if !got {
		return nil, nil
	}
	return l, nil
}

// release gives the lock back if this lease still holds it, on a context of its own: a refresh cut
// short by shutdown still releases it.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), l.b.storeTimeout)
	defer cancel()
	if err := l.b.store.Unlock(ctx, l.k, l.owner); err != nil {
		l.b.storeFailed(err)
	}
}

// lockTTL is how long k's refresh lock lives when taken with ctx: an access token's lapses a few
// seconds after one DingTalk call (as the contract says); a ticket's holder may first wait for the
// app's access token (a whole refresh) and then make the ticket call and a retry, so its lock lives
// as long as the refresh may run.
func (b *Broker) lockTTLFor(ctx context.Context, k token.Key) time.Duration {
	if k.Kind != token.JSAPITicket {
		return b.lockTTL
	}
	if d, ok := ctx.Deadline(); ok {
		return max(b.lockTTL, time.Until(d)+time.Second)
	}
	return b.lockTTL
}

// storeFailed notes that the store did not answer. A refused connection or a broken answer makes the
// replica refresh alone at once; timeouts do so only storeDownAfter in a row, so that one slow
// operation does not drop every refresh's lock. The monitor brings the store back.
func (b *Broker) storeFailed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		if b.storeSlow.Add(1) < storeDownAfter {
			return
		}
	}
	if b.storeUp.CompareAndSwap(true, false) {
		b.m.storeUp.Set(0)
		b.log.Warn("store unavailable: serving from memory and refreshing alone", "err", err)
	}
}

// storeOK notes that the store answered.
func (b *Broker) storeOK() { b.storeSlow.Store(0) }
