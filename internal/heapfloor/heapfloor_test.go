package heapfloor

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, roots, floor uint64
		want               int
	}{
		{live: 3 * mib, floor: 32 * mib, want: 800},                 // the minimum heap, 4 MiB × 8, decides
		{live: 3 * mib, roots: 1 * mib, floor: 32 * mib, want: 725}, // 3 + 4 × 7.25 = 32 MiB
		{live: 16 * mib, floor: 32 * mib, want: 100},
		{live: 15 * mib, roots: 2 * mib, floor: 32 * mib, want: 100},
		{live: 100 * mib, floor: 32 * mib, want: 100}, // a large heap: Go's default
		{live: 15 * mib, floor: 32 * mib, want: 113},
		{live: 200 << 10, floor: 32 * mib, want: 800},
		{live: 1, floor: 1 << 40, want: maxPercent},
		// No collection yet: Go's default, never a GOGC that overflows the runtime's int32 and
		// turns the collector off (a live heap of 0 did, in a first draft).
		{live: 0, floor: 32 * mib, want: 100},
	} {
		got := Percent(tc.live, tc.roots, tc.floor)
		if got != tc.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.live, tc.roots, tc.floor, got, tc.want)
		}
		p := uint64(got)
		goal := max(minHeap*p/100, tc.live+(tc.live+tc.roots)*p/100)
		if tc.live > 0 && got < maxPercent && goal < tc.floor*99/100 {
			t.Errorf("Percent(%d, %d, %d) = %d: heap goal %d is below the floor", tc.live, tc.roots, tc.floor, got, goal)
		}
		if got > 100 && goal > tc.floor {
			t.Errorf("Percent(%d, %d, %d) = %d: heap goal %d is above the floor", tc.live, tc.roots, tc.floor, got, goal)
		}
	}
}

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func gogc() uint64 { return read("/gc/gogc:percent") }

// Keep puts the runtime's own heap goal at the floor while the live heap is small, and restores
// GOGC when its context ends.
func TestKeepRaisesAndRestores(t *testing.T) {
	if gogc() != 100 {
		t.Fatalf("GOGC is %d before the test; run it without GOGC set", gogc())
	}
	runtime.GC() // a live heap measured by a finished cycle
	const floor = 64 << 20
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Keep(ctx, floor, time.Millisecond, func(string) string { return "" })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for gogc() <= 100 {
		if time.Now().After(deadline) {
			t.Fatal("GOGC stayed at 100 below a 64 MiB floor")
		}
		runtime.Gosched()
	}
	runtime.GC()
	if goal := read("/gc/heap/goal:bytes"); goal < floor*9/10 || goal > floor*11/10 {
		t.Errorf("heap goal %d MiB at GOGC=%d, want about the floor, 64 MiB", goal>>20, gogc())
	}
	cancel()
	<-done
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC after Keep returned = %d, want 100 restored", got)
	}
}

// An operator's GOGC wins: Keep returns at once without touching it.
func TestKeepLeavesOperatorsGOGC(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Keep(context.Background(), 1<<30, time.Millisecond, func(k string) string {
			if k == "GOGC" {
				return "200"
			}
			return ""
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Keep did not return with GOGC set")
	}
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC = %d, want 100 untouched", got)
	}
}
