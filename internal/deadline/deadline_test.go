package deadline

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// pair returns a connection accepted through a Listener with the given tick, and its client end.
func pair(t *testing.T, tick time.Duration) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, tick)
	t.Cleanup(func() { l.Close() })
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readResult runs a one-byte Read on c and reports its error and when it returned.
func readResult(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	return done
}

func wait(t *testing.T, done <-chan error, bound time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		t.Fatalf("no answer within %v", bound)
		return nil
	}
}

// A deadline left to the sweeper cuts the read off, not before the instant asked for.
func TestFarDeadlineIsMetOnTime(t *testing.T) {
	server, _ := pair(t, 50*time.Millisecond)
	at := time.Now().Add(400 * time.Millisecond)
	if err := server.SetReadDeadline(at); err != nil {
		t.Fatal(err)
	}
	err := wait(t, readResult(server), 10*time.Second)
	if !isTimeout(err) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	if now := time.Now(); now.Before(at) {
		t.Fatalf("cut off %v before the deadline", at.Sub(now))
	}
}

// The last move wins: a deadline moved later (through a clear) is met at the later instant.
func TestMovedDeadline(t *testing.T) {
	server, _ := pair(t, 50*time.Millisecond)
	_ = server.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_ = server.SetReadDeadline(time.Time{})
	at := time.Now().Add(800 * time.Millisecond)
	_ = server.SetReadDeadline(at)
	err := wait(t, readResult(server), 10*time.Second)
	if !isTimeout(err) || time.Now().Before(at) {
		t.Fatalf("read: %v at %v before the moved deadline", err, time.Until(at))
	}
}

// A deadline in the past (net/http's abort of its background read) goes to the connection at once,
// whatever the tick: this listener's sweeper would not wake for an hour.
func TestPastDeadlineAppliesAtOnce(t *testing.T) {
	server, _ := pair(t, time.Hour)
	done := readResult(server)
	if err := server.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done, 10*time.Second); !isTimeout(err) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	// Cleared, the connection reads again.
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// A deadline the sweeper handed to the connection and then cleared does not fire: after its instant
// has passed, data is read.
func TestArmedDeadlineCleared(t *testing.T) {
	server, client := pair(t, 50*time.Millisecond)
	at := time.Now().Add(300 * time.Millisecond)
	_ = server.SetReadDeadline(at)
	c := server.(*conn)
	for armed := false; !armed; { // the sweeper hands it over within a tick of at-2 ticks
		c.mu.Lock()
		armed = c.read.set
		c.mu.Unlock()
		if !armed {
			time.Sleep(10 * time.Millisecond)
		}
	}
	_ = server.SetReadDeadline(time.Time{})
	time.Sleep(time.Until(at) + 100*time.Millisecond) // let the cleared instant pass
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, readResult(server), 10*time.Second); err != nil {
		t.Fatalf("read after a cleared deadline: %v", err)
	}
}

// A write deadline cuts off a client that stops reading.
func TestWriteDeadline(t *testing.T) {
	server, _ := pair(t, 50*time.Millisecond)
	at := time.Now().Add(400 * time.Millisecond)
	_ = server.SetWriteDeadline(at)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := server.Write(buf); err != nil {
				done <- err
				return
			}
		}
	}()
	if err := wait(t, done, 10*time.Second); !isTimeout(err) || time.Now().Before(at) {
		t.Fatalf("write: %v, %v before the deadline", err, time.Until(at))
	}
}

// net/http on a Listener: keep-alive requests are served, a client that never finishes its headers
// is cut off by ReadHeaderTimeout, and after Close the sweeper keeps cutting.
func TestHTTPServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, 50*time.Millisecond)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: 2 * time.Second,
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}

	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	if _, err := io.WriteString(slow, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil { // never ends its headers
		t.Fatal(err)
	}
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(slow)
	if err != nil {
		t.Fatalf("slow client: %v (not cut off within 10 s)", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("slow client cut off after %v, before ReadHeaderTimeout", took)
	}
	if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 ") {
		t.Fatalf("slow client got %q", b)
	}
}
