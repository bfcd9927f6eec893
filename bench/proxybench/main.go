// Command proxybench measures tokend's proxy against a bare httputil.ReverseProxy forwarding to the
// same local upstream (bench/proxy.sh runs it; results in docs/benchmarks.md, "Proxy").
//
//	proxybench run -bin DIR [-rounds 6] [-duration 8s] [-rate 400] [-conns 32] [-uploads 50] [-upload-size 20MiB]
//	proxybench upstream -listen ADDR      # the stand-in for DingTalk both proxies forward to
//	proxybench bare -listen ADDR -upstream URL
//	proxybench load -url URL -key KEY -rate N -conns N -duration D   # fixed-rate GETs, JSON result
//
// run starts the upstream and the bare proxy from its own binary and tokend from DIR, pins both
// servers under test to CPU 0 and the upstream and the load to CPU 1, and measures each server's CPU
// time per request (utime+stime from /proc/PID/stat) over interleaved rounds: request rates swing by
// tens of percent on a shared machine, CPU per request much less. The load is a fixed rate within
// tokend's egress budget (proxy.max_rps: at most 450 with upstream.max_rps), which a closed-loop tool
// like wrk would exhaust at once, measuring mostly tokend's cheap 429s. It then sends concurrent large uploads
// through each server and samples its resident memory. Markdown tables go to stdout, progress to
// stderr. Every process it starts is stopped when it returns.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: proxybench run|upstream|bare [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "upstream":
		err = serveUpstream(ctx, os.Args[2:])
	case "bare":
		err = serveBare(ctx, os.Args[2:])
	case "load":
		err = serveLoad(ctx, os.Args[2:])
	case "run":
		err = run(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

// upstreamAnswer is what the upstream says to every API call: a typical small DingTalk answer.
const upstreamAnswer = `{"errcode":0,"errmsg":"ok","request_id":"bench","result":{"userid":"manager","name":"Bench User","active":true}}`

// serveUpstream answers the token calls tokend makes at start and every other request with
// upstreamAnswer, after draining the request body.
func serveUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1.0/oauth2/accessToken", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"accessToken":"bench-token-0123456789abcdef","expireIn":7200}`)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, upstreamAnswer)
	})
	return serve(ctx, *listen, mux)
}

// serveBare is the baseline: the standard library's reverse proxy, nothing else.
func serveBare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	upstream := fs.String("upstream", "", "upstream base URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*upstream)
	if err != nil || u.Host == "" {
		return errors.New("-upstream must be a URL")
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	return serve(ctx, *listen, rp)
}

func serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// proc is a started child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
}

// start runs bin pinned to cpu and waits for its "listening on ADDR" line (or, for tokend, the
// "tokend serving" log line with the client API's address).
func start(ctx context.Context, name, cpu string, out io.Writer, bin string, args ...string) (*proc, error) {
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", cpu, bin}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent {
				if a, ok := strings.CutPrefix(line, "listening on "); ok {
					found <- a
					sent = true
				} else if i := strings.Index(line, `"listen":"`); i >= 0 && strings.Contains(line, "tokend serving") {
					a := line[i+len(`"listen":"`):]
					found <- a[:strings.IndexByte(a, '"')]
					sent = true
				}
			}
			if out != nil {
				fmt.Fprintln(out, line)
			}
		}
	}()
	select {
	case p.addr = <-found:
		return p, nil
	case <-time.After(20 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not announce its address", name)
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// self is this program's own binary, for the upstream and bare subcommands.
func self() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(exe)
}

func init() { log.SetFlags(0) }
