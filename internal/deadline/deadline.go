// Package deadline makes net/http's per-request connection deadlines cheap without loosening them.
//
// With ReadTimeout and WriteTimeout set, net/http moves a connection's deadlines five times per
// request (idle, header and body read deadlines; a write deadline set before and cleared after the
// response), and each move is a runtime timer operation: together about as much CPU as tokend's whole
// handler. A Listener from this package hands out connections that pass a deadline on to the
// runtime only when it has to:
//
//   - a deadline earlier than the one in force, or later by more than Slack, is applied at once, so
//     a connection is never allowed longer than asked, and at most Slack less;
//   - a write deadline cleared after a response is cleared only before the next write that finds
//     it still unset (net/http sets a new one before every response, so that is rare).
//
// So every bound net/http enforces (idle, header, body and write timeouts) still holds to the
// nanosecond on the late side, and a request's body read deadline that lands within Slack of its
// header deadline, or a write deadline within Slack of the previous request's, costs nothing.
package deadline

import (
	"net"
	"sync"
	"time"
)

// Listener wraps ln: its connections apply deadlines as the package comment says, with slack > 0.
func Listener(ln net.Listener, slack time.Duration) net.Listener {
	return &listener{Listener: ln, slack: slack}
}

type listener struct {
	net.Listener
	slack time.Duration
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, slack: l.slack}, nil
}

// conn tracks, for each direction, the deadline asked for (want) and the one in force (set).
type conn struct {
	net.Conn
	slack time.Duration

	mu                  sync.Mutex
	wantRead, setRead   time.Time
	wantWrite, setWrite time.Time
}

// closeEnough reports whether the deadline in force may stand for want: both unset, or set no
// later than want and no more than slack before it.
func (c *conn) closeEnough(set, want time.Time) bool {
	if want.IsZero() || set.IsZero() {
		return want.IsZero() && set.IsZero()
	}
	return !set.After(want) && want.Sub(set) <= c.slack
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wantRead = t
	if c.closeEnough(c.setRead, t) {
		return nil
	}
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	c.setRead = t
	return nil
}

// SetWriteDeadline applies an earlier or much later deadline now; a cleared one is left for Write.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wantWrite = t
	if t.IsZero() || c.closeEnough(c.setWrite, t) {
		return nil
	}
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	c.setWrite = t
	return nil
}

func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.wantWrite.IsZero() && !c.setWrite.IsZero() {
		if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		c.setWrite = time.Time{}
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// CloseWrite half-closes a TCP connection, as net/http does after a request it could not read
// whole; without it net/http would close at once.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
