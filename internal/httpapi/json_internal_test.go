package httpapi

import (
	"testing"
	"time"
)

// TestStampCache checks the cached expires_at against appendTime, for times sharing a slot (16 s
// apart), times in other zones, and repeats.
func TestStampCache(t *testing.T) {
	var c stampCache
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	zone := time.FixedZone("UTC+8", 8*3600)
	times := []time.Time{base, base.Add(16 * time.Second), base, base.Add(time.Second), base.In(zone),
		base.Add(16 * time.Second).In(zone), base.Add(1500 * time.Millisecond), base.Add(-16 * time.Second)}
	for _, tm := range times {
		for range 2 {
			got := string(c.append([]byte("x"), tm))
			want := "x" + string(appendTime(nil, tm))
			if got != want {
				t.Errorf("%v: %s, want %s", tm, got, want)
			}
		}
	}
}
