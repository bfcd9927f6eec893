package broker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/store"
)

// TestOneFlightPerCredentialWhateverStartedIt: with the store down (no lock to serialise anything), a
// client's invalidation arrives while the scheduled refresh of the same token is calling DingTalk.
// The process makes one call at a time for the credential: the invalidation waits for the refresh,
// then checks the reported value (which the refresh got back from DingTalk) with a call of its own.
func TestOneFlightPerCredentialWhateverStartedIt(t *testing.T) {
	st := &flakyStore{Memory: store.NewMemory(store.MemoryOptions{})}
	st.down.Store(true)
	clk := newClock()
	up := newUpstream(2 * time.Hour)
	up.now = clk.Now
	b := newBroker(t, st, up, broker.Options{Now: clk.Now})
	tok, err := b.Token(t.Context(), crm) // fetched alone, kept in memory
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(2*time.Hour - 5*time.Minute) // inside the refresh window, still valid
	gate := up.hold()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := b.Refresh(context.Background(), crm); err != nil {
			t.Error(err)
		}
	})
	<-up.entered // the scheduled refresh is calling DingTalk
	wg.Go(func() {
		if _, err := b.Invalidate(context.Background(), "crm", tok.Value); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-up.entered:
		t.Fatalf("the invalidation called DingTalk while the scheduled refresh's call was in flight (calls=%d)", up.calls.Load())
	case <-time.After(time.Second):
	}
	close(gate)
	wg.Wait()
	if n := up.calls.Load(); n != 3 {
		t.Errorf("DingTalk calls = %d, want 3 (warm-up, refresh, then the invalidation's check)", n)
	}
}
