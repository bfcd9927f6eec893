// Package redistest runs real redis-server processes for tests: a single node, a Redis Cluster and a
// Sentinel-managed master, each on free loopback ports and torn down when the test ends.
//
// When redis-server is not installed a test using this package is skipped, unless the environment
// variable CI is set: CI must never skip the real-Redis tests, so there it fails instead.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a process may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process. Its methods may be called from any goroutine but not
// concurrently with one another.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	args func() []string // extra arguments, asked afresh at every start; may be nil

	mu   sync.Mutex
	proc *process
}

// process is one run of a binary.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  string
}

// Start starts a redis-server on a free loopback port with nothing persisted, waits until it answers
// PING, and kills it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return startServer(tb, serverBinary(tb), nil)
}

// serverBinary finds redis-server, or skips (fails under CI) when it is missing.
func serverBinary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("redis-server not found on PATH, and CI is set: real-Redis tests must run in CI: %v", err)
		}
		tb.Skipf("redis-server not found on PATH (install it to run the real-Redis tests): %v", err)
	}
	return bin
}

// startServer starts bin on a free port with args appended to the standard ones.
func startServer(tb testing.TB, bin string, args func() []string) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), args: args}
	// A free port can be taken by someone else between our probe and redis binding it: try again.
	var err error
	for range 5 {
		s.port = freePort(tb)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(s.stop)
	return s
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns a redis:// URL of the server's database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	}
	if s.args != nil {
		args = append(args, s.args()...)
	}
	p, err := startProcess(s.bin, s.dir, args)
	if err != nil {
		return err
	}
	if err := waitPing(s.Addr(), p); err != nil {
		p.kill()
		return fmt.Errorf("redis-server on port %d: %w\n%s", s.port, err, p.logTail())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// startProcess starts bin with args, its output going to a log file in dir.
func startProcess(bin, dir string, args []string) (*process, error) {
	f, err := os.CreateTemp(dir, "log-*.txt")
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	defer f.Close()
	// argv[0] must stay "redis-server": the binary picks its mode by the name it was started under.
	cmd := exec.Command(bin, args...)
	cmd.Args[0] = filepath.Base(bin)
	cmd.Dir = dir
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: f.Name()}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGKILL and waits for the process to exit.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *process) signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// logTail returns the end of the process's log, for failure messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// waitPing polls addr with PING until it answers PONG, the process exits, or startTimeout passes.
func waitPing(addr string, p *process) error {
	deadline := time.Now().Add(startTimeout)
	for {
		reply, err := Do(addr, "PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		select {
		case <-p.done:
			return errors.New("exited before answering PING")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %v", startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process; nothing to wait on instead
	}
}

// Kill sends SIGKILL to the server and waits until it has exited. Kill of a killed server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Restart kills the server if it runs and starts a new, empty one on the same port, returning once it
// answers PING.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.tb.Fatalf("redistest: restart: %v", err)
	}
}

// Freeze stops the server with SIGSTOP: connections stay open and unanswered, as with a hung host.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server with SIGCONT.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		s.tb.Fatalf("redistest: signal %v: server is not running", sig)
	}
	if err := p.signal(sig); err != nil {
		s.tb.Fatalf("redistest: signal %v: %v", sig, err)
	}
}

// Do sends one command to the server and returns its reply, as the package-level Do.
func (s *Server) Do(args ...string) (string, error) { return Do(s.Addr(), args...) }

func (s *Server) stop() { s.Kill() }

// Do sends one command to the Redis at addr on a new connection and returns its reply: a status,
// bulk string or integer as text, the elements of an array joined by newlines, and "" for nil. An
// error reply is returned as an error. It gives up after two seconds.
func Do(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// waitFor polls cond until it is true or timeout passes, then fails the test with what.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: %s: not so within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling Redis's own progress; nothing to wait on instead
	}
}

// infoField returns the value of field in the INFO output text, or "".
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return ""
}
