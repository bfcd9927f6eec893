package deadline

import (
	"net"
	"testing"
	"time"
)

// BenchmarkRequestDeadlines replays the deadline moves net/http (Go 1.26) makes on a keep-alive
// connection per request, round-robin over 64 loopback connections as a server under load has them:
// "bare" is a server without timeouts (its moves clear deadlines, and abort the background read),
// "timeouts" has tokend's timeouts on plain connections, "listener" the same through a Listener.
func BenchmarkRequestDeadlines(b *testing.B) {
	past := time.Unix(1, 0)
	bare := func(c net.Conn, _ time.Time) {
		_ = c.SetReadDeadline(time.Time{}) // readRequest: no ReadTimeout
		_ = c.SetReadDeadline(time.Time{}) // startBackgroundRead
		_ = c.SetReadDeadline(past)        // abortPendingRead
		_ = c.SetReadDeadline(time.Time{})
		_ = c.SetWriteDeadline(time.Time{}) // after finishRequest
		_ = c.SetReadDeadline(time.Time{})  // no IdleTimeout
		_ = c.SetReadDeadline(time.Time{})  // no ReadHeaderTimeout
	}
	timeouts := func(c net.Conn, now time.Time) {
		_ = c.SetReadDeadline(now.Add(10 * time.Second)) // readRequest: ReadTimeout
		_ = c.SetWriteDeadline(now.Add(45 * time.Second))
		_ = c.SetReadDeadline(time.Time{}) // startBackgroundRead
		_ = c.SetReadDeadline(past)        // abortPendingRead
		_ = c.SetReadDeadline(time.Time{})
		_ = c.SetWriteDeadline(time.Time{})              // after finishRequest
		_ = c.SetReadDeadline(now.Add(90 * time.Second)) // IdleTimeout
		_ = c.SetReadDeadline(now.Add(5 * time.Second))  // ReadHeaderTimeout
	}
	for _, bc := range []struct {
		name     string
		listener bool
		moves    func(net.Conn, time.Time)
	}{{"bare", false, bare}, {"timeouts", false, timeouts}, {"listener", true, timeouts}} {
		b.Run(bc.name, func(b *testing.B) {
			conns := conns(b, 64, bc.listener)
			i := 0
			for b.Loop() {
				bc.moves(conns[i%len(conns)], time.Now())
				i++
			}
		})
	}
}

func conns(b *testing.B, n int, wrap bool) []net.Conn {
	b.Helper()
	var ln net.Listener
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if wrap {
		ln = NewListener(ln, time.Second)
	}
	b.Cleanup(func() { ln.Close() })
	var out []net.Conn
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); s.Close() })
		out = append(out, s)
	}
	return out
}
