package deadline

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns both ends of a real loopback TCP connection, the server's accepted through Listener.
func pair(t testing.TB, slack time.Duration) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listener(ln, slack)
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func timedOut(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// TestNeverLaterThanAsked: a read or write deadline takes effect no later than asked, whatever came
// before it: an earlier one at once, a later one unless within the slack.
func TestNeverLaterThanAsked(t *testing.T) {
	const slack = time.Second
	server, _ := pair(t, slack)
	buf := make([]byte, 1)

	// A far deadline, then a near one: the near one holds.
	_ = server.SetReadDeadline(time.Now().Add(time.Hour))
	_ = server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	if _, err := server.Read(buf); !timedOut(err) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("read deadline of 50ms held %v", d)
	}
	// An expired deadline, then one an hour away: far beyond the slack, so applied, and the read
	// waits (it is cut by the test's own, nearer deadline below, not at once by the old one).
	_ = server.SetReadDeadline(time.Now().Add(time.Hour))
	_ = server.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	start = time.Now()
	if _, err := server.Read(buf); !timedOut(err) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("read after re-arming: %v after %v, want a timeout after about 300ms", err, time.Since(start))
	}
	// Cleared: a read blocks until data comes.
	_ = server.SetReadDeadline(time.Time{})
	c := server.(*conn)
	if !c.setRead.IsZero() {
		t.Fatal("a cleared read deadline was not passed on")
	}
}

// TestCoalesces: deadlines within the slack of the one in force, and a cleared write deadline
// followed by a new one, cost no runtime call; a write after a clear runs without the old deadline.
func TestCoalesces(t *testing.T) {
	server, client := pair(t, time.Second)
	c := server.(*conn)
	now := time.Now()
	_ = c.SetReadDeadline(now.Add(5 * time.Second))
	_ = c.SetReadDeadline(now.Add(5*time.Second + 10*time.Millisecond)) // within the slack: kept
	if !c.setRead.Equal(now.Add(5 * time.Second)) {
		t.Fatalf("read deadline in force %v, want the first one", c.setRead)
	}
	_ = c.SetWriteDeadline(now.Add(45 * time.Second))
	_ = c.SetWriteDeadline(time.Time{})
	_ = c.SetWriteDeadline(now.Add(45*time.Second + 10*time.Millisecond))
	if !c.setWrite.Equal(now.Add(45 * time.Second)) {
		t.Fatalf("write deadline in force %v, want the first one", c.setWrite)
	}
	// A deadline in the past, then a clear: the next write must not fail on the old deadline.
	_ = c.SetWriteDeadline(time.Now().Add(-time.Second))
	_ = c.SetWriteDeadline(time.Time{})
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write after clearing an expired deadline: %v", err)
	}
	got := make([]byte, 1)
	if _, err := io.ReadFull(client, got); err != nil || got[0] != 'x' {
		t.Fatalf("client read %q, %v", got, err)
	}
	if _, ok := server.(interface{ CloseWrite() error }); !ok {
		t.Fatal("the connection hides CloseWrite")
	}
}

// BenchmarkRequestDeadlines is what net/http does to a connection's deadlines per request with
// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout set, on a bare connection and
// through Listener.
func BenchmarkRequestDeadlines(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "bare"
		if wrap {
			name = "listener"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			var l net.Listener = ln
			if wrap {
				l = Listener(ln, time.Second)
			}
			go func() { _, _ = net.Dial("tcp", ln.Addr().String()) }()
			c, err := l.Accept()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for b.Loop() {
				_ = c.SetReadDeadline(time.Now().Add(90 * time.Second)) // idle
				t0 := time.Now()
				_ = c.SetReadDeadline(t0.Add(5 * time.Second))           // header
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))   // body (ReadTimeout 5s)
				_ = c.SetWriteDeadline(time.Now().Add(45 * time.Second)) // WriteTimeout
				_ = c.SetWriteDeadline(time.Time{})                      // after the response
			}
		})
	}
}
