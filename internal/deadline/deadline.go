// Package deadline keeps the deadlines of a listener's connections with one sweeper instead of a
// runtime timer per move.
//
// With its timeouts set (ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout), net/http moves
// each connection's read and write deadlines eight times per request, four of them to an instant
// ahead, each move a runtime timer operation on a heap shared by every connection, for deadlines
// that a well-behaved client never meets. Through a Listener, a move to an instant more than two
// ticks away is a store under the connection's lock; a sweeper wakes every tick and hands the
// connection the deadlines that fall before its next wake-up, so that the runtime's own timer cuts
// the connection off at the very instant asked for. Deadlines in the past or nearer than two ticks
// (net/http's abort of its background read, a short deadline of a handler's) go to the connection
// at once. A deadline is therefore never met later than on a plain connection (unless the sweeper
// itself is starved of CPU for longer than a tick), nor earlier.
package deadline

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listener wraps a net.Listener; see the package documentation.
type Listener struct {
	net.Listener
	tick time.Duration
	now  atomic.Int64 // the sweeper's clock (UnixNano), at most a tick behind

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool // no more Accept; the sweeper stops once the last connection is closed
}

// NewListener wraps ln. tick is the sweeper's period: deadlines nearer than two ticks are set on
// the connection directly. It must be positive.
func NewListener(ln net.Listener, tick time.Duration) *Listener {
	if tick <= 0 {
		panic("deadline: tick must be positive")
	}
	l := &Listener{Listener: ln, tick: tick, conns: map[*conn]struct{}{}}
	l.now.Store(time.Now().UnixNano())
	go l.sweep()
	return l
}

// Accept waits for and returns the next connection, whose deadlines the sweeper keeps.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dc := &conn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[dc] = struct{}{}
	l.mu.Unlock()
	return dc, nil
}

// Close closes the listener. Connections already accepted keep their deadlines until they close.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

func (l *Listener) sweep() {
	t := time.NewTicker(l.tick)
	defer t.Stop()
	for range t.C {
		now := time.Now() // not the tick's own time, which is stale when the sweeper runs late
		l.now.Store(now.UnixNano())
		horizon := now.Add(l.tick).UnixNano() // what falls before the next wake-up
		l.mu.Lock()
		if l.closed && len(l.conns) == 0 {
			l.mu.Unlock()
			return
		}
		for c := range l.conns {
			c.mu.Lock()
			c.read.due(horizon, c.Conn.SetReadDeadline)
			c.write.due(horizon, c.Conn.SetWriteDeadline)
			c.mu.Unlock()
		}
		l.mu.Unlock()
	}
}

// conn is an accepted connection whose deadline moves go through its side.
type conn struct {
	net.Conn
	l           *Listener
	mu          sync.Mutex
	read, write side
}

// side is one direction's deadline: the instant asked for, and whether the connection has it.
type side struct {
	at  time.Time // zero: none
	set bool      // the connection's own deadline is at (or was set and not yet cleared)
}

// move records the deadline t. It sets it on the connection at once when it is near (or past), and
// clears the connection's deadline when it had one and t is zero or far.
func (s *side) move(t time.Time, near int64, apply func(time.Time) error) error {
	s.at = t
	if !t.IsZero() && t.UnixNano() < near {
		s.set = true
		return apply(t)
	}
	if s.set {
		s.set = false
		return apply(time.Time{})
	}
	return nil
}

// due hands the connection its deadline when it falls before horizon.
func (s *side) due(horizon int64, apply func(time.Time) error) {
	if !s.set && !s.at.IsZero() && s.at.UnixNano() < horizon {
		s.set = true
		_ = apply(s.at) // an error means the connection is closed: nothing left to cut off
	}
}

// near is the instant before which a deadline goes to the connection at once: two ticks after the
// sweeper's clock, which is at most a tick behind, so at least one sweep falls before any deadline
// left to the sweeper.
func (c *conn) near() int64 { return c.l.now.Load() + 2*int64(c.l.tick) }

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read.move(t, c.near(), c.Conn.SetReadDeadline)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write.move(t, c.near(), c.Conn.SetWriteDeadline)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	near := c.near()
	if err := c.read.move(t, near, c.Conn.SetReadDeadline); err != nil {
		return err
	}
	return c.write.move(t, near, c.Conn.SetWriteDeadline)
}

// Close closes the connection and stops keeping its deadlines.
func (c *conn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side of a TCP connection, as net/http does before closing a
// connection whose request body it did not read.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
