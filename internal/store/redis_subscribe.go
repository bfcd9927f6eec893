// Announcements on Redis: the subscription that keeps every replica's cache current.

package store

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokend/tokend/internal/token"
)

// Subscribe calls fn with every record any client writes (each Put announces the whole record, so fn
// needs no re-read) until ctx ends; then it returns nil. It calls ready each time the subscription is
// confirmed by Redis: at start, and after every reconnect, when announcements may have been missed.
// ready and fn are called from the calling goroutine, one at a time.
//
// Subscribe never gives up while ctx lives. It re-subscribes, with a capped back-off, whenever the
// connection breaks, and it checks a quiet connection with PING so that a frozen Redis or a silently
// dropped connection is noticed within seconds. An announcement it cannot decode (another tokend
// version, say) is skipped, and ready is called so that the caller re-reads instead.
func (s *Redis) Subscribe(ctx context.Context, ready func(), fn func(token.Key, token.Record)) error {
	backoff := subscribeMinBackoff
	for ctx.Err() == nil {
		if s.subscribeOnce(ctx, ready, fn) {
			backoff = subscribeMinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, subscribeMaxBackoff)
	}
	return nil
}

// subscribeOnce runs one subscription until its connection fails or ctx ends, and reports whether
// Redis confirmed it.
func (s *Redis) subscribeOnce(ctx context.Context, ready func(), fn func(token.Key, token.Record)) (established bool) {
	ps := s.c.Subscribe(ctx) // no channel yet: no I/O
	defer ps.Close()
	// Closing the connection is what interrupts a blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()

	sctx, cancel := s.op(ctx)
	err := ps.Subscribe(sctx, s.channel)
	cancel()
	if err != nil {
		s.failed(err)
		return false
	}
	pinged := false
	for {
		wait := s.pingEvery
		if pinged {
			wait = s.opTimeout
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return established
			}
			if pinged || !isTimeout(err) {
				s.failed(err)
				return established
			}
			pctx, cancel := s.op(ctx)
			err = ps.Ping(pctx)
			cancel()
			if err != nil {
				return established
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.channel {
				established = true
				ready()
			}
		case *redis.Message:
			if m.Channel != s.channel {
				continue
			}
			k, rec, err := decodeEvent(m.Payload)
			if err != nil {
				ready()
				continue
			}
			fn(k, rec)
		}
	}
}
