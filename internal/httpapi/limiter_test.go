package httpapi

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	l := newLimiter(2, 3, func() time.Time { return now }) // 2 a second, bursts of 3
	for i := range 3 {
		if d := l.take(); d != 0 {
			t.Fatalf("request %d of the burst waits %v", i+1, d)
		}
	}
	if d := l.take(); d != 500*time.Millisecond {
		t.Fatalf("past the burst: wait %v, want 500ms", d)
	}
	// A refused request spends nothing: the wait only shrinks with time.
	now = now.Add(200 * time.Millisecond)
	if d := l.take(); d != 300*time.Millisecond {
		t.Fatalf("200ms later: wait %v, want 300ms", d)
	}
	now = now.Add(300 * time.Millisecond)
	if d := l.take(); d != 0 {
		t.Fatalf("a token later: wait %v, want 0", d)
	}
	// A long pause refills the bucket to its burst, not beyond.
	now = now.Add(time.Hour)
	for i := range 3 {
		if d := l.take(); d != 0 {
			t.Fatalf("after a pause, request %d waits %v", i+1, d)
		}
	}
	if d := l.take(); d == 0 {
		t.Fatal("the bucket held more than its burst")
	}
	if d := newLimiter(1, 0, func() time.Time { return now }).take(); d != 0 {
		t.Fatal("burst 0 admits nothing; it must mean 1")
	}
}
