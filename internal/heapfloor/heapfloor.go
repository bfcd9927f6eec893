// Package heapfloor keeps the garbage collector's heap goal from falling below a floor.
//
// With Go's default GOGC=100 the heap may grow to twice the live heap before the next collection,
// and to at least 4 MiB. tokend's live heap is a few MiB (its configuration, the broker's entries,
// the metric series) while net/http allocates about a kilobyte per request, so under load it collects
// every megabyte or two: dozens of cycles a second, each marking the whole live heap and every
// goroutine stack for little garbage. Keep raises GOGC while the live heap is small, so that the
// heap goal is the floor (a few dozen cycles a second become a few), and lets it fall back to 100
// once the live heap is large enough on its own: the heap goal is about max(floor, 2 × live heap),
// as with GOGC=100 for a large heap. A memory limit (GOMEMLIMIT) still bounds it.
//
// It never overrides an operator's choice: when GOGC is set in the environment, Keep does nothing.
package heapfloor

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Default is tokend's floor: 32 MiB, ten to thirty times its live heap with a few apps. Under load the
// GC then runs a few times a second rather than dozens, for some 30 MiB of memory.
const Default = 32 << 20

// minHeap is the runtime's least heap goal at GOGC=100, 4 MiB, which it scales with GOGC: at
// GOGC=800 no heap is collected below 32 MiB.
const minHeap = 4 << 20

// maxPercent bounds Percent, far from the runtime's int32.
const maxPercent = 10_000

// Percent is the least GOGC, not below Go's default 100, that puts the heap goal at floor bytes or
// more. The runtime's goal is the larger of minHeap × GOGC/100 and live + (live + roots) × GOGC/100,
// where live is the heap the last collection marked and roots the goroutine stacks and globals it
// scanned. A live heap of 0 means no collection has measured it yet: 100.
func Percent(live, roots, floor uint64) int {
	if live == 0 || floor <= live {
		return 100
	}
	p := min(floor*100/minHeap, (floor-live)*100/(live+roots), maxPercent)
	return int(max(p, 100))
}

// Keep adjusts GOGC every period, from the live heap the last collection left, until ctx ends; it
// restores the GOGC it found when it returns. It returns at once, doing nothing, when getenv("GOGC")
// is not empty or floor is zero.
func Keep(ctx context.Context, floor uint64, period time.Duration, getenv func(string) string) {
	if floor == 0 || getenv("GOGC") != "" {
		return
	}
	// Percent's arguments: the live heap, and the roots (stacks, globals) the last cycle scanned.
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	set := 100
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		metrics.Read(sample)
		var v [3]uint64
		for i, s := range sample {
			if s.Value.Kind() == metrics.KindUint64 {
				v[i] = s.Value.Uint64()
			}
		}
		// Change GOGC only when the goal would move by more than an eighth: the live heap wanders
		// with every collection, and a change makes the runtime recompute its pacing.
		if p := Percent(v[0], v[1]+v[2], floor); p < set*7/8 || p > set*9/8 {
			debug.SetGCPercent(p)
			set = p
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
