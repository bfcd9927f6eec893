package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// storeDownAfter is how many store operations in a row must time out before the replica treats the
// store as down and refreshes alone: one slow answer is not an outage.
const storeDownAfter = 3

// backoffKeep is how long a back-off note outlives its wait, so that the attempt count does.
const backoffKeep = 10 * time.Minute

// banNote is the name of the note that says DingTalk bans the egress IP all replicas share.
const banNote = "ipban"

// shared is what the replicas share through the store, and the only part of the broker that talks
// to it. It owns the Store port, the deadline of every store operation and the store's health as
// this replica sees it, the refresh locks (as leases), the shared budgets, and the notes (back-off,
// ban, cool-down) as typed values with their encoding. Notes carry durations (the store's TTL),
// never one replica's wall-clock instant. Its methods are safe for concurrent use.
type shared struct {
	st      Store
	timeout time.Duration
	log     *slog.Logger
	m       *metrics
	up      atomic.Bool
	slow    atomic.Int32 // operations timed out in a row
}

func newShared(st Store, timeout time.Duration, log *slog.Logger, m *metrics) *shared {
	sh := &shared{st: st, timeout: timeout, log: log, m: m}
	sh.up.Store(true)
	m.storeUp.Set(1)
	return sh
}

// isUp reports whether the store answered lately: while it does not, the replica refreshes alone.
func (sh *shared) isUp() bool { return sh.up.Load() }

// failed notes that the store did not answer. A refused connection or a broken answer marks it down
// at once; timeouts only storeDownAfter in a row, so that one slow operation does not drop every
// refresh's lock. The monitor's ping brings it back (ping).
func (sh *shared) failed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		if sh.slow.Add(1) < storeDownAfter {
			return
		}
	}
	if sh.up.CompareAndSwap(true, false) {
		sh.m.storeUp.Set(0)
		sh.log.Warn("store unavailable: serving from memory and refreshing alone", "err", err)
	}
}

// answered notes that the store answered.
func (sh *shared) answered() { sh.slow.Store(0) }

// done records the outcome of one store operation and passes its error on.
func (sh *shared) done(err error) error {
	if err != nil {
		sh.failed(err)
	} else {
		sh.answered()
	}
	return err
}

// bound bounds a store operation. The store bounds each operation itself too; this keeps the
// broker's promise on any store.
func (sh *shared) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, sh.timeout)
}

// ping asks the store whether it answers, and reports whether it came back (was down, is up now).
func (sh *shared) ping(ctx context.Context) (back bool, err error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	if err := sh.done(sh.st.Ping(ctx)); err != nil {
		return false, err
	}
	if sh.up.CompareAndSwap(false, true) {
		sh.m.storeUp.Set(1)
		sh.log.Info("store available again")
		return true, nil
	}
	return false, nil
}

// get reads k's record; ok is false when there is none.
func (sh *shared) get(ctx context.Context, k token.Key) (token.Record, bool, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	rec, ok, err := sh.st.Get(ctx, k)
	return rec, ok, sh.done(err)
}

// put writes t over generation gen, fenced (see Store.Put).
func (sh *shared) put(ctx context.Context, k token.Key, gen int64, t token.Token) (token.Record, bool, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	cur, written, err := sh.st.Put(ctx, k, gen, t)
	return cur, written, sh.done(err)
}

// subscribe passes on other replicas' writes until ctx ends (see Store.Subscribe).
func (sh *shared) subscribe(ctx context.Context, ready func(), fn func(token.Key, token.Record)) error {
	return sh.st.Subscribe(ctx, ready, fn)
}

// lease is one hold of a credential's refresh lock. Each hold has an owner string of its own, so a
// late release (after the lock lapsed and was taken again, by another replica or another flight of
// this one) deletes nothing but itself.
type lease struct {
	sh    *shared
	k     token.Key
	owner string
}

// lock tries k's refresh lock for ttl. It returns a lease when it got the lock, nil when another
// holds it. On a store error the lock may have been set all the same (the answer was lost on the way
// back): it is released at once rather than left to lapse as an orphan.
func (sh *shared) lock(ctx context.Context, k token.Key, ttl time.Duration) (*lease, error) {
	raw := make([]byte, 12)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	l := &lease{sh: sh, k: k, owner: hex.EncodeToString(raw)}
	sctx, cancel := sh.bound(ctx)
	defer cancel()
	got, err := sh.st.TryLock(sctx, k, l.owner, ttl)
	if sh.done(err) != nil {
		l.release()
		return nil, err
	}
	if !got {
		return nil, nil
	}
	return l, nil
}

// release gives the lock back if this lease still holds it, on a context of its own: a refresh cut
// short by shutdown still releases it.
func (l *lease) release() {
	ctx, cancel := l.sh.bound(context.Background())
	defer cancel()
	_ = l.sh.done(l.sh.st.Unlock(ctx, l.k, l.owner))
}

// spend takes one call from the budget called name (limit calls per second for all replicas). It
// returns 0 when the call may be made, otherwise how long until the budget has room.
func (sh *shared) spend(ctx context.Context, name string, limit int) (time.Duration, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	wait, err := sh.st.Spend(ctx, name, limit, time.Second)
	return wait, sh.done(err)
}

// backoffNote is the shared back-off state of one credential: every replica obeys one schedule.
type backoffNote struct {
	Class    dingtalk.Class  `json:"class"`
	Family   dingtalk.Family `json:"family"`
	Status   int             `json:"status,omitempty"`
	Code     string          `json:"code"`
	Attempts int             `json:"attempts"`
	// KeepMs: the note lives this long past the end of the wait, so that the attempt count outlives
	// it. The wait left is the note's time to live minus KeepMs.
	KeepMs int64 `json:"keep_ms"`
	// Write tells one write from the next, so that a replica waiting on the lock sees a failure noted
	// even when it repeats the previous one.
	Write uint32 `json:"write"`
	// Wait is what is left of the wait, as read (not stored).
	Wait time.Duration `json:"-"`
}

func backoffName(k token.Key) string { return "backoff:" + k.App + ":" + string(k.Kind) }

// backoff reads k's back-off note; ok is false when there is none (or it cannot be decoded: another
// version's).
func (sh *shared) backoff(ctx context.Context, k token.Key) (n backoffNote, ok bool, err error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	v, ttl, ok, err := sh.st.GetNote(ctx, backoffName(k))
	if sh.done(err) != nil || !ok || json.Unmarshal([]byte(v), &n) != nil {
		return backoffNote{}, false, err
	}
	n.Wait = ttl - time.Duration(n.KeepMs)*time.Millisecond
	return n, true, nil
}

// setBackoff writes k's back-off note for a wait of wait.
func (sh *shared) setBackoff(ctx context.Context, k token.Key, n backoffNote, wait time.Duration) {
	n.KeepMs = backoffKeep.Milliseconds()
	n.Write = mrand.Uint32()
	raw, _ := json.Marshal(n)
	ctx, cancel := sh.bound(context.WithoutCancel(ctx))
	defer cancel()
	_ = sh.done(sh.st.SetNote(ctx, backoffName(k), string(raw), wait+backoffKeep))
}

// clearBackoff deletes k's back-off note.
func (sh *shared) clearBackoff(ctx context.Context, k token.Key) {
	ctx, cancel := sh.bound(context.WithoutCancel(ctx))
	defer cancel()
	_ = sh.done(sh.st.SetNote(ctx, backoffName(k), "", 0))
}

// ban returns what is left of a ban of the egress IP (0: none).
func (sh *shared) ban(ctx context.Context) (time.Duration, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	_, left, ok, err := sh.st.GetNote(ctx, banNote)
	if sh.done(err) != nil || !ok {
		return 0, err
	}
	return max(left, 0), nil
}

// setBan notes a ban of the egress IP lasting d: its end is the note's expiry, by the store's clock.
func (sh *shared) setBan(ctx context.Context, d time.Duration) {
	ctx, cancel := sh.bound(context.WithoutCancel(ctx))
	defer cancel()
	_ = sh.done(sh.st.SetNote(ctx, banNote, dingtalk.CodeIPBan, d))
}

// checkedName names the note that says k's value was just checked with DingTalk and came back
// unchanged (by its fingerprint, never the value).
func checkedName(k token.Key, value string) string {
	return "cooldown:" + k.App + ":" + string(k.Kind) + ":" + token.Fingerprint(value)
}

// checked returns what is left of the cool-down after value was checked (0: not checked lately).
func (sh *shared) checked(ctx context.Context, k token.Key, value string) (time.Duration, error) {
	ctx, cancel := sh.bound(ctx)
	defer cancel()
	_, left, ok, err := sh.st.GetNote(ctx, checkedName(k, value))
	if sh.done(err) != nil || !ok {
		return 0, err
	}
	return max(left, 0), nil
}

// setChecked notes that value was just checked and came back unchanged, for d.
func (sh *shared) setChecked(ctx context.Context, k token.Key, value string, d time.Duration) {
	ctx, cancel := sh.bound(context.WithoutCancel(ctx))
	defer cancel()
	_ = sh.done(sh.st.SetNote(ctx, checkedName(k, value), "1", d))
}
