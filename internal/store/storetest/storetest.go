// Package storetest is the contract suite every tokend store must pass: the fencing of Put, locks,
// notes, shared rate budgets, announcements and their lifetimes. Run it from a store's tests with a Harness factory.
package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// Store is the store API under test: the broker's port, which every store implements.
type Store = broker.Store

// Harness is one fresh, empty backend with two handles on it, standing for two replicas.
type Harness struct {
	// A and B share one backend: what one writes, the other reads.
	A, B Store
	// Now is the clock the backend judges lifetimes and budget windows by. Nil means time.Now.
	Now func() time.Time
	// Advance moves the backend's clock forward by d: lifetimes and the clock Spend reads. Nil means
	// the backend follows the wall clock (a real Redis): the suite then waits for lifetimes to pass,
	// polling with a deadline.
	Advance func(d time.Duration)
}

// pollSlack is how long past a lifetime the suite waits for a wall-clock backend to act on it.
const pollSlack = 5 * time.Second

func (h Harness) now() time.Time {
	if h.Now == nil {
		return time.Now()
	}
	return h.Now()
}

// elapse lets d pass on the backend and then requires cond to hold (Elapse with h.Advance).
func (h Harness) elapse(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	Elapse(t, h.Advance, d, what, cond)
}

// Elapse lets d pass on a backend and then requires cond to hold: at once after advance(d), or, when
// advance is nil (the backend follows the wall clock), within pollSlack of polling, where time itself
// is under test. It serves the store's other contract suites too.
func Elapse(t *testing.T, advance func(time.Duration), d time.Duration, what string, cond func() bool) {
	t.Helper()
	if advance != nil {
		advance(d)
		if !cond() {
			t.Fatalf("%s: not so after advancing the clock by %v", what, d)
		}
		return
	}
	deadline := time.Now().Add(d + pollSlack)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so %v after a lifetime of %v", what, pollSlack, d)
		}
		time.Sleep(10 * time.Millisecond) // polling a wall-clock expiry; nothing to wait on instead
	}
}

// Run runs the contract suite. newStore is called once per subtest and must return a harness on a
// fresh, empty backend (a new prefix on a shared Redis will do); it registers its own cleanup.
func Run(t *testing.T, newStore func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"GetEmpty", testGetEmpty},
		{"PutSequence", testPutSequence},
		{"StaleGeneration", testStaleGeneration},
		{"ExpiryNeverBackwards", testExpiryNeverBackwards},
		{"ConcurrentPut", testConcurrentPut},
		{"KeysIndependent", testKeysIndependent},
		{"OddBytes", testOddBytes},
		{"TimePrecision", testTimePrecision},
		{"RecordRetention", testRecordRetention},
		{"Lock", testLock},
		{"LockLapses", testLockLapses},
		{"Notes", testNotes},
		{"NoteExpires", testNoteExpires},
		{"SpendShared", testSpendShared},
		{"SpendWindow", testSpendWindow},
		{"SpendConcurrent", testSpendConcurrent},
		{"SpendInvalid", testSpendInvalid},
		{"Subscribe", testSubscribe},
		{"SubscribeOddBytes", testSubscribeOddBytes},
		{"SubscribeStops", testSubscribeStops},
		{"Ping", testPing},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

var crm = token.Key{App: "crm", Kind: token.AccessToken}

// tok returns a token fetched now and expiring in after now, first seen an hour earlier (three
// different times, so that a store mixing them up is caught), with whole-millisecond, UTC times so it
// compares equal to what a store returns.
func tok(h Harness, value string, in time.Duration) token.Token {
	now := h.now().Truncate(time.Millisecond).UTC()
	return token.Token{Value: value, ExpiresAt: now.Add(in), FirstSeen: now.Add(-time.Hour), FetchedAt: now}
}

func mustPut(t *testing.T, s Store, k token.Key, gen int64, tk token.Token) token.Record {
	t.Helper()
	cur, written, err := s.Put(t.Context(), k, gen, tk)
	if err != nil {
		t.Fatalf("Put(%s, gen %d): %v", k, gen, err)
	}
	if !written {
		t.Fatalf("Put(%s, gen %d): not written; current generation %d", k, gen, cur.Generation)
	}
	want := token.Record{Token: tk, Generation: gen + 1}
	if !sameRecord(cur, want) {
		t.Fatalf("Put(%s, gen %d) returned %s, want %s", k, gen, show(cur), show(want))
	}
	return cur
}

func mustGet(t *testing.T, s Store, k token.Key) (token.Record, bool) {
	t.Helper()
	rec, ok, err := s.Get(t.Context(), k)
	if err != nil {
		t.Fatalf("Get(%s): %v", k, err)
	}
	return rec, ok
}

func sameRecord(a, b token.Record) bool {
	return a.Generation == b.Generation && a.Value == b.Value &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.FirstSeen.Equal(b.FirstSeen) && a.FetchedAt.Equal(b.FetchedAt)
}

// show describes a record without its value, which may be long or binary: only its fingerprint.
func show(r token.Record) string {
	return fmt.Sprintf("{gen %d, value %q (%d bytes), expires %s, first seen %s, fetched %s}",
		r.Generation, token.Fingerprint(r.Value), len(r.Value), r.ExpiresAt.Format(time.RFC3339Nano),
		r.FirstSeen.Format(time.RFC3339Nano), r.FetchedAt.Format(time.RFC3339Nano))
}

func testGetEmpty(t *testing.T, h Harness) {
	if rec, ok := mustGet(t, h.A, crm); ok {
		t.Fatalf("Get on an empty store = %s, true", show(rec))
	}
}

func testPutSequence(t *testing.T, h Harness) {
	t1 := tok(h, "first", 2*time.Hour)
	r1 := mustPut(t, h.A, crm, 0, t1)
	if got, ok := mustGet(t, h.B, crm); !ok || !sameRecord(got, r1) {
		t.Fatalf("B.Get after A.Put = %s, %v; want %s", show(got), ok, show(r1))
	}
	t2 := tok(h, "second", 3*time.Hour)
	r2 := mustPut(t, h.B, crm, 1, t2)
	if got, ok := mustGet(t, h.A, crm); !ok || !sameRecord(got, r2) {
		t.Fatalf("A.Get after B.Put = %s, %v; want %s", show(got), ok, show(r2))
	}
}

func testStaleGeneration(t *testing.T, h Harness) {
	r1 := mustPut(t, h.A, crm, 0, tok(h, "winner", 2*time.Hour))
	for _, gen := range []int64{0, 2, 7, -1} {
		cur, written, err := h.B.Put(t.Context(), crm, gen, tok(h, "loser", 3*time.Hour))
		if err != nil {
			t.Fatalf("Put gen %d: %v", gen, err)
		}
		if written || !sameRecord(cur, r1) {
			t.Fatalf("Put gen %d over generation 1 = %s, %v; want refused with %s", gen, show(cur), written, show(r1))
		}
	}
	if got, _ := mustGet(t, h.A, crm); !sameRecord(got, r1) {
		t.Fatalf("after refused Puts Get = %s, want %s", show(got), show(r1))
	}
	// Nothing stored: only generation 0 may write.
	other := token.Key{App: "other", Kind: token.AccessToken}
	cur, written, err := h.A.Put(t.Context(), other, 1, tok(h, "x", time.Hour))
	if err != nil || written || cur.Generation != 0 {
		t.Fatalf("Put gen 1 on an empty key = %s, %v, %v; want refused with generation 0", show(cur), written, err)
	}
}

func testExpiryNeverBackwards(t *testing.T, h Harness) {
	first := tok(h, "long", 2*time.Hour)
	r1 := mustPut(t, h.A, crm, 0, first)

	// The same value with an earlier expiry: refused (a late writer cannot shorten a renewal)...
	earlier := first
	earlier.ExpiresAt = first.ExpiresAt.Add(-time.Millisecond)
	cur, written, err := h.B.Put(t.Context(), crm, 1, earlier)
	if err != nil {
		t.Fatal(err)
	}
	if written || !sameRecord(cur, r1) {
		t.Fatalf("Put of the same value with an earlier expiry = %s, %v; want refused with %s", show(cur), written, show(r1))
	}
	equal := first
	equal.FetchedAt = first.FetchedAt.Add(time.Millisecond)
	r2 := mustPut(t, h.B, crm, 1, equal)

	// ...unless it carries an earlier first-seen of the value (a ticket's 24 h cap comes with it).
	earliest := equal
	earliest.ExpiresAt = equal.ExpiresAt.Add(-time.Minute)
	earliest.FirstSeen = equal.FirstSeen.Add(-time.Hour)
	r3 := mustPut(t, h.A, crm, r2.Generation, earliest)

	// A different value at the expected generation replaces it, whatever the expiries: the writer
	// read that generation before fetching, and expiries from skewed clocks cannot say which is newer.
	fresh := tok(h, "fetched-after-revocation", time.Hour)
	fresh.ExpiresAt = r3.ExpiresAt.Add(-30 * time.Minute)
	mustPut(t, h.B, crm, r3.Generation, fresh)
}

func testConcurrentPut(t *testing.T, h Harness) {
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
		results = make([]token.Record, n)
		errs    = make([]error, n)
	)
	start := make(chan struct{})
	for i := range n {
		s := h.A
		if i%2 == 1 {
			s = h.B
		}
		wg.Go(func() {
			<-start
			v := fmt.Sprintf("value-%d", i)
			cur, written, err := s.Put(t.Context(), crm, 0, tok(h, v, time.Hour))
			results[i], errs[i] = cur, err
			if written {
				mu.Lock()
				winners = append(winners, v)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d concurrent Puts of generation 0 wrote %d times, want exactly once", n, len(winners))
	}
	for i, r := range results {
		if r.Generation != 1 || r.Value != winners[0] {
			t.Fatalf("Put %d returned generation %d value %q, want generation 1 value %q", i, r.Generation, r.Value, winners[0])
		}
	}
}

func testKeysIndependent(t *testing.T, h Harness) {
	keys := []token.Key{
		{App: "crm", Kind: token.AccessToken},
		{App: "crm", Kind: token.JSAPITicket},
		{App: "hr", Kind: token.AccessToken},
	}
	recs := make([]token.Record, len(keys))
	for i, k := range keys {
		recs[i] = mustPut(t, h.A, k, 0, tok(h, "v-"+k.String(), time.Duration(i+1)*time.Hour))
	}
	for i, k := range keys {
		if got, ok := mustGet(t, h.B, k); !ok || !sameRecord(got, recs[i]) {
			t.Fatalf("Get(%s) = %s, %v; want its own %s", k, show(got), ok, show(recs[i]))
		}
	}
	// A lock and a note do not touch records.
	if ok, err := h.A.TryLock(t.Context(), keys[0], "owner", time.Minute); err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	if err := h.A.SetNote(t.Context(), keys[0].String(), "note", time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, ok := mustGet(t, h.A, keys[0]); !ok || got.Generation != 1 {
		t.Fatalf("Get after TryLock and SetNote = %s, %v", show(got), ok)
	}
}

// oddValues are values and names that a careless encoding would mangle.
func oddValues() []string {
	return []string{
		"",
		"plain",
		"\x00\x01\xff\xfe",
		"with space\r\n\ttab",
		`{"json":"yes"}`,
		"5:netstring,",
		"a:b,c;d|e{f}g",
		"ключ-密钥-🔑",
		"\xc3\x28 invalid utf-8",
		strings.Repeat("long.", 20000),
	}
}

func testOddBytes(t *testing.T, h Harness) {
	for i, v := range oddValues() {
		k := token.Key{App: oddApp(i), Kind: token.AccessToken}
		tk := tok(h, v, time.Hour)
		mustPut(t, h.A, k, 0, tk)
		got, ok := mustGet(t, h.B, k)
		if !ok || got.Value != v || got.Generation != 1 {
			t.Fatalf("odd value %d: Get = %s, %v; want the value back byte for byte", i, show(got), ok)
		}
	}
}

// oddApp returns an app name for case i; a few are odd themselves.
func oddApp(i int) string {
	switch i % 4 {
	case 1:
		return fmt.Sprintf("br{ace}%d", i)
	case 2:
		return fmt.Sprintf("co:lon %d ключ", i)
	case 3:
		return fmt.Sprintf("}%d{", i)
	}
	return fmt.Sprintf("app-%d", i)
}

func testTimePrecision(t *testing.T, h Harness) {
	base := h.now().Add(time.Hour)
	east := time.FixedZone("UTC+8", 8*3600)
	// Each time field in turn is zero, to show that zero comes back as zero and not as the epoch.
	tests := []struct {
		name string
		k    token.Key
		tk   token.Token
	}{
		{"no first seen", crm, token.Token{
			Value:     "v",
			ExpiresAt: base.Add(123456 * time.Nanosecond),
			FetchedAt: base.Add(-time.Hour + 654321*time.Nanosecond).In(east),
		}},
		{"no fetched", token.Key{App: "crm", Kind: token.JSAPITicket}, token.Token{
			Value:     "v",
			ExpiresAt: base.Add(999999 * time.Nanosecond).In(east),
			FirstSeen: base.Add(-2*time.Hour + 1500*time.Microsecond),
		}},
	}
	for _, tc := range tests {
		cur, written, err := h.A.Put(t.Context(), tc.k, 0, tc.tk)
		if err != nil || !written {
			t.Fatalf("%s: Put = %v, %v", tc.name, written, err)
		}
		got, _ := mustGet(t, h.B, tc.k)
		for name, r := range map[string]token.Record{"Put": cur, "Get": got} {
			for field, pair := range map[string][2]time.Time{
				"expiry":     {r.ExpiresAt, tc.tk.ExpiresAt},
				"first seen": {r.FirstSeen, tc.tk.FirstSeen},
				"fetched":    {r.FetchedAt, tc.tk.FetchedAt},
			} {
				gotT, in := pair[0], pair[1]
				if in.IsZero() {
					if !gotT.IsZero() {
						t.Errorf("%s: %s %s = %v, want the zero time back", tc.name, name, field, gotT)
					}
					continue
				}
				if want := in.Truncate(time.Millisecond); !gotT.Equal(want) {
					t.Errorf("%s: %s %s = %v, want %v (millisecond precision)", tc.name, name, field, gotT, want)
				}
				if gotT.Location() != time.UTC {
					t.Errorf("%s: %s %s location = %v, want UTC", tc.name, name, field, gotT.Location())
				}
			}
		}
	}
}

func testRecordRetention(t *testing.T, h Harness) {
	// A token that expired long ago is kept until RecordRetention after its expiry.
	const left = time.Second
	tk := tok(h, "old", left-store.RecordRetention)
	mustPut(t, h.A, crm, 0, tk)
	if _, ok := mustGet(t, h.B, crm); !ok {
		t.Fatal("record gone before its retention ended")
	}
	h.elapse(t, left+time.Millisecond, "record dropped after its retention", func() bool {
		_, ok := mustGet(t, h.B, crm)
		return !ok
	})
	// Once dropped, the key starts again at generation 0.
	mustPut(t, h.A, crm, 0, tok(h, "new", time.Hour))
}

func testPing(t *testing.T, h Harness) {
	for name, s := range map[string]Store{"A": h.A, "B": h.B} {
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("%s.Ping: %v", name, err)
		}
	}
}

func testCanceledContext(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tk := tok(h, "v", time.Hour)
	calls := map[string]func() error{
		"Get":     func() error { _, _, err := h.A.Get(ctx, crm); return err },
		"Put":     func() error { _, _, err := h.A.Put(ctx, crm, 0, tk); return err },
		"TryLock": func() error { _, err := h.A.TryLock(ctx, crm, "a", time.Minute); return err },
		"Unlock":  func() error { return h.A.Unlock(ctx, crm, "a") },
		"GetNote": func() error { _, _, _, err := h.A.GetNote(ctx, "n"); return err },
		"SetNote": func() error { return h.A.SetNote(ctx, "n", "v", time.Minute) },
		"Spend":   func() error { _, err := h.A.Spend(ctx, "b", 1, time.Minute); return err },
		"Ping":    func() error { return h.A.Ping(ctx) },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s with a canceled context returned no error", name)
		}
	}
	// Nothing was written or taken.
	if rec, ok := mustGet(t, h.B, crm); ok {
		t.Fatalf("Put with a canceled context stored %s", show(rec))
	}
	if wait := spend(t, h.B, "b", 1, time.Hour); wait != 0 {
		t.Fatalf("Spend after a canceled Spend: wait %v, want 0 (nothing taken)", wait)
	}
}
