package broker

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler keeps entries ordered by when they are due. One goroutine (run) waits for the earliest
// and hands due entries to the workers, so the cost of scheduling grows with the entries coming due,
// not with the number of apps.
type scheduler struct {
	now  func() time.Time
	mu   sync.Mutex
	q    queue
	wake chan struct{} // capacity 1: "the earliest due time may have changed"
}

func newScheduler(now func() time.Time) *scheduler {
	return &scheduler{now: now, wake: make(chan struct{}, 1)}
}

// schedule (re)queues e for due.
func (s *scheduler) schedule(e *entry, due time.Time) {
	s.mu.Lock()
	e.due = due
	if e.heapIndex >= 0 {
		heap.Fix(&s.q, e.heapIndex)
	} else {
		heap.Push(&s.q, e)
	}
	first := s.q[0] == e
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// remove drops e from the queue (its app was removed).
func (s *scheduler) remove(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.heapIndex >= 0 {
		heap.Remove(&s.q, e.heapIndex)
	}
}

// run hands each entry to work when it comes due, until ctx ends. A due entry leaves the queue; the
// refresh requeues it.
func (s *scheduler) run(ctx context.Context, work chan<- *entry) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var next *entry
		wait := time.Hour
		if len(s.q) > 0 {
			if wait = s.q[0].due.Sub(s.now()); wait <= 0 {
				next = heap.Pop(&s.q).(*entry)
			}
		}
		s.mu.Unlock()
		if next != nil {
			select {
			case work <- next:
				continue
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// queue is a min-heap of entries by due time. Its methods run with scheduler.mu held.
type queue []*entry

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].heapIndex = i
	q[j].heapIndex = j
}
func (q *queue) Push(x any) {
	e := x.(*entry)
	e.heapIndex = len(*q)
	*q = append(*q, e)
}
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.heapIndex = -1
	return e
}
