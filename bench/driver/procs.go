package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// proc is one child process. Its output goes to a log file in the work directory; lines of stdout
// are also offered to a watcher until it is satisfied (to learn a bound address).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done closes
}

// lab owns every process of a run and the work directory.
type lab struct {
	dir string
	bin string
	hc  *http.Client
	// cpu, when set, pins the processes started next to these CPUs (taskset -c).
	cpu string
	// wrap, when set, runs the processes started next through this command and its flags (which
	// must exec the process in place, keeping its PID: env, valgrind).
	wrap []string

	mu    sync.Mutex
	procs []*proc
}

// start runs bin with args; wait, if not nil, reads stdout lines until it returns true (bounded by
// 30 s). The process gets SIGKILL if the driver dies (Pdeathsig), so nothing outlives a crashed run.
func (l *lab) start(ctx context.Context, name, bin string, args []string, wait func(line string) bool) (*proc, error) {
	logPath := filepath.Join(l.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	if len(l.wrap) > 0 {
		bin, args = l.wrap[0], append(append(l.wrap[1:len(l.wrap):len(l.wrap)], bin), args...)
	}
	if l.cpu != "" {
		bin, args = "taskset", append([]string{"-c", l.cpu, bin}, args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if wait == nil {
		return p, nil
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-p.done
				return nil, fmt.Errorf("%s exited before it was ready (%v); see %s", name, p.err, logPath)
			}
			if wait(line) {
				return p, nil
			}
		case <-deadline.C:
			return nil, fmt.Errorf("%s not ready within 30 s; see %s", name, logPath)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stop ends p with SIGTERM, then SIGKILL if it has not exited within 15 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// alive reports an error if p has exited.
func (p *proc) alive() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); see %s", p.name, p.err, p.log)
	default:
		return nil
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stopAll stops every process, newest first.
func (l *lab) stopAll() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// redisServer is a redis-server the lab started, with nothing persisted.
type redisServer struct {
	*proc
	addr string
	c    *redis.Client
}

func (l *lab) startRedis(ctx context.Context, name string) (*redisServer, error) {
	var lastErr error
	for range 5 { // a free port can be taken between the probe and the bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(l.dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
		p, err := l.start(ctx, name, "redis-server", args, nil)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
		if err := poll(ctx, 10*time.Second, func() bool { return p.alive() != nil || c.Ping(ctx).Err() == nil }); err == nil && p.alive() == nil {
			return &redisServer{proc: p, addr: addr, c: c}, nil
		}
		lastErr = fmt.Errorf("redis-server did not start; see %s", p.log)
		c.Close()
		p.stop()
	}
	return nil, lastErr
}

// startAddr starts a program that prints "listening on ADDR" and returns the address.
func (l *lab) startAddr(ctx context.Context, name, bin string, args []string) (*proc, string, error) {
	var addr string
	p, err := l.start(ctx, name, bin, args, func(line string) bool {
		a, ok := strings.CutPrefix(line, "listening on ")
		addr = strings.TrimSpace(a)
		return ok
	})
	return p, addr, err
}

// poll calls cond every 50 ms until it holds, ctx ends or d passes. Real time is what the driver
// measures, so polling is the right tool here.
func poll(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// get fetches url with an optional bearer key and returns the status and body.
func (l *lab) get(ctx context.Context, url, key string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// status returns url's status code, 0 when it does not answer.
func (l *lab) status(ctx context.Context, url string) int {
	code, _, err := l.get(ctx, url, "")
	if err != nil {
		return 0
	}
	return code
}
