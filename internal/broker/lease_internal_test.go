package broker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

type noUpstream struct{}

func (noUpstream) AccessToken(context.Context, dingtalk.App) (dingtalk.Grant, error) {
	return dingtalk.Grant{}, &dingtalk.Error{Code: "unused"}
}
func (noUpstream) JSAPITicket(context.Context, dingtalk.API, string) (dingtalk.Grant, error) {
	return dingtalk.Grant{}, &dingtalk.Error{Code: "unused"}
}

var crmKey = token.Key{App: "crm", Kind: token.AccessToken}

func testBroker(t *testing.T, st Store, now func() time.Time) *Broker {
	t.Helper()
	b, err := New(Options{Store: st, Upstream: noUpstream{}, Now: now,
		Apps: []App{{Name: "crm", Cred: dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "crm", Secret: "s"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLateReleaseOfALapsedLeaseKeepsTheNextHoldersLock: each hold of a lock has its own owner, so a
// flight whose lock lapsed and was taken again (here by another flight of the same process) releases
// nothing but its own.
func TestLateReleaseOfALapsedLeaseKeepsTheNextHoldersLock(t *testing.T) {
	var ns atomic.Int64
	ns.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, ns.Load()) }
	st := store.NewMemory(store.MemoryOptions{Now: now})
	b := testBroker(t, st, now)
	first, err := b.sh.lock(t.Context(), crmKey, time.Second)
	if err != nil || first == nil {
		t.Fatalf("first lock: %v %v", first, err)
	}
	ns.Add(int64(2 * time.Second)) // it lapses
	second, err := b.sh.lock(t.Context(), crmKey, time.Minute)
	if err != nil || second == nil {
		t.Fatalf("second lock: %v %v", second, err)
	}
	first.release() // late
	if got, err := st.TryLock(t.Context(), crmKey, "another-replica", time.Minute); err != nil || got {
		t.Fatalf("the late release of a lapsed lease freed the next holder's lock (got=%v err=%v)", got, err)
	}
	second.release()
	if got, err := st.TryLock(t.Context(), crmKey, "another-replica", time.Minute); err != nil || !got {
		t.Fatalf("the holder's release did not free its lock (got=%v err=%v)", got, err)
	}
}

// putHook is a store whose Put runs a hook first.
type putHook struct {
	*store.Memory
	hook func()
}

func (p *putHook) Put(ctx context.Context, k token.Key, gen int64, t token.Token) (token.Record, bool, error) {
	if p.hook != nil {
		p.hook()
	}
	return p.Memory.Put(ctx, k, gen, t)
}

// TestWriteBackKeepsANewerDirtyValue: while the write-back of a value fetched alone is in flight, a
// newer value is fetched alone too. The write-back must leave the newer one marked for writing.
func TestWriteBackKeepsANewerDirtyValue(t *testing.T) {
	now := time.Now()
	st := &putHook{Memory: store.NewMemory(store.MemoryOptions{})}
	b := testBroker(t, st, time.Now)
	e, err := b.entry(crmKey)
	if err != nil {
		t.Fatal(err)
	}
	b.keepLocal(e, token.Token{Value: "alone-1", ExpiresAt: now.Add(time.Hour), FirstSeen: now, FetchedAt: now})
	st.hook = func() {
		st.hook = nil
		b.keepLocal(e, token.Token{Value: "alone-2", ExpiresAt: now.Add(2 * time.Hour), FirstSeen: now, FetchedAt: now})
	}
	b.writeBack(t.Context())
	b.writeBack(t.Context())
	rec, ok, err := st.Get(t.Context(), crmKey)
	if err != nil || !ok || rec.Value != "alone-2" {
		t.Fatalf("the store holds %q (ok=%v err=%v), want the newer value written back", rec.Value, ok, err)
	}
}
