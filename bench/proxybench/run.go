package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/bench/procstat"
	"github.com/tokend/tokend/internal/config"
)

// target is one server under test.
type target struct {
	name string
	proc *proc
	url  string // what the load requests
	// upload is where large bodies go.
	upload string
	// samples of CPU time per request (µs), requests/s and p99 latency, one per round.
	cpu, rps []float64
	p99      []time.Duration
	errors   int64
	late     int64
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	binDir := fs.String("bin", "", "directory holding the tokend binary")
	rounds := fs.Int("rounds", 6, "measured rounds per server, interleaved")
	duration := fs.Duration("duration", 8*time.Second, "length of one round")
	conns := fs.Int("conns", 32, "connections of the load")
	rate := fs.Int("rate", 400, "requests per second of the load (within proxy.max_rps, 440 here)")
	uploads := fs.Int("uploads", 50, "concurrent uploads in the memory phase")
	uploadSize := fs.String("upload-size", "20MiB", "size of each upload")
	if err := fs.Parse(args); err != nil {
		return err
	}
	size, err := config.ParseSize(*uploadSize)
	if err != nil {
		return err
	}
	if *binDir == "" {
		return fmt.Errorf("-bin is required")
	}
	me, err := self()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "proxybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// CPU 1: the upstream and the load; CPU 0: the server under test (one at a time is loaded).
	up, err := start(ctx, "upstream", "1", nil, me, "upstream", "-listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer up.stop()
	upURL := "http://" + up.addr
	bare, err := start(ctx, "bare", "0", nil, me, "bare", "-listen", "127.0.0.1:0", "-upstream", upURL)
	if err != nil {
		return err
	}
	defer bare.stop()

	key, _, err := config.GenerateKey()
	if err != nil {
		return err
	}
	sum := config.HashKey(key)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
ops_listen: 127.0.0.1:0
log:
  level: info
dingtalk:
  api_base: %[1]s
  oapi_base: %[1]s
upstream:
  max_rps: 10
proxy:
  max_rps: 440                # with upstream.max_rps, the most the configuration allows
  max_body: %[3]s
apps:
  - name: bench
    type: dingtalk
    client_id: dingbench
    client_secret: bench-secret
clients:
  - name: bench
    key_sha256: %[2]s
    apps: []
    proxy:
      bench: ["* oapi:/**", "* api:/**"]
`, upURL, hex.EncodeToString(sum[:]), *uploadSize)
	cfgPath := filepath.Join(dir, "tokend.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	// The audit log (one line per proxied call) is part of the cost: it goes to a file, as to a log
	// collector.
	logFile, err := os.Create(filepath.Join(dir, "tokend.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	tk, err := start(ctx, "tokend", "0", logFile, filepath.Join(*binDir, "tokend"), "-config", cfgPath)
	if err != nil {
		return err
	}
	defer tk.stop()

	const path = "/topapi/v2/user/get"
	targets := []*target{
		{name: "bare httputil.ReverseProxy", proc: bare, url: "http://" + bare.addr + path, upload: "http://" + bare.addr + "/media/upload"},
		{name: "tokend proxy", proc: tk, url: "http://" + tk.addr + "/v1/apps/bench/proxy/oapi" + path,
			upload: "http://" + tk.addr + "/v1/apps/bench/proxy/oapi/media/upload"},
	}
	for _, t := range targets {
		if err := check(ctx, t.url, key); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "warm-up, 3s each\n")
	for _, t := range targets {
		if _, err := runLoad(ctx, me, t.url, key, *rate, *conns, 3*time.Second); err != nil {
			return err
		}
	}
	for i := range *rounds {
		order := targets
		if i%2 == 1 {
			order = []*target{targets[1], targets[0]}
		}
		for _, t := range order {
			c0, err := procstat.CPUTime(t.proc.pid())
			if err != nil {
				return err
			}
			r, err := runLoad(ctx, me, t.url, key, *rate, *conns, *duration)
			if err != nil {
				return err
			}
			c1, err := procstat.CPUTime(t.proc.pid())
			if err != nil {
				return err
			}
			per := float64((c1 - c0).Microseconds()) / float64(r.Requests)
			t.cpu, t.rps, t.p99 = append(t.cpu, per), append(t.rps, r.RPS), append(t.p99, r.P99)
			t.errors += r.Non2xx + r.Errors
			t.late += r.Late
			fmt.Fprintf(os.Stderr, "round %d %-28s %6.0f req/s  %6.1f µs CPU/req  p99 %v  non-2xx %d errors %d late %d\n",
				i+1, t.name, r.RPS, per, r.P99, r.Non2xx, r.Errors, r.Late)
		}
	}

	fmt.Printf("### Proxy: CPU per request against a bare reverse proxy\n\n")
	fmt.Printf("%d interleaved rounds of %v at %d req/s over %d connections (the load on CPU 1 with the upstream, the server on CPU 0); GET %s, %d-byte answer.\n\n",
		*rounds, *duration, *rate, *conns, path, len(upstreamAnswer))
	fmt.Printf("| server | CPU µs/request (median) | min–max | req/s (median) | p99 (median) | failed | late |\n|---|---|---|---|---|---|---|\n")
	for _, t := range targets {
		lo, hi := minMax(t.cpu)
		fmt.Printf("| %s | %.1f | %.1f–%.1f | %.0f | %v | %d | %d |\n", t.name, median(t.cpu), lo, hi, median(t.rps), medianDur(t.p99).Round(10*time.Microsecond), t.errors, t.late)
	}
	ratio := median(targets[0].cpu) / median(targets[1].cpu)
	verdict := "met"
	if ratio < 0.80 {
		verdict = "NOT met"
	}
	fmt.Printf("\nratio bare/tokend CPU per request: **%.2f** (goal ≥ 0.80: %s)\n\n", ratio, verdict)

	fmt.Printf("### Proxy: memory with %d concurrent %s uploads\n\n", *uploads, *uploadSize)
	fmt.Printf("| server | RSS before | peak RSS during | uploads ok | took |\n|---|---|---|---|---|\n")
	worst := int64(0)
	for _, t := range targets {
		before, _ := procstat.RSS(t.proc.pid())
		peak, ok, took, err := uploadPhase(ctx, t, key, *uploads, size)
		if err != nil {
			return err
		}
		if t.proc == tk {
			worst = peak
		}
		fmt.Printf("| %s | %s | %s | %d/%d | %v |\n", t.name, procstat.MiB(before), procstat.MiB(peak), ok, *uploads, took.Round(100*time.Millisecond))
	}
	verdict = "met"
	if worst >= 300<<20 {
		verdict = "NOT met"
	}
	fmt.Printf("\ntokend's peak RSS: **%s** (goal < 300 MiB: %s)\n", procstat.MiB(worst), verdict)
	return nil
}

func check(ctx context.Context, url, key string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == upstreamAnswer {
				return nil
			}
			err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond) // the server is warming up
	}
}

// uploadPhase sends n concurrent uploads of size bytes (generated, never held) and samples the
// server's resident memory every 20 ms.
func uploadPhase(ctx context.Context, t *target, key string, n int, size int64) (peak int64, ok int, took time.Duration, err error) {
	var okN atomic.Int64
	var wg sync.WaitGroup
	done := make(chan struct{})
	var peakV atomic.Int64
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if r, err := procstat.RSS(t.proc.pid()); err == nil && r > peakV.Load() {
				peakV.Store(r)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	start := time.Now()
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.upload+"?type=file", io.LimitReader(zeros{}, size))
			req.ContentLength = size
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == upstreamAnswer {
				okN.Add(1)
			}
		})
	}
	wg.Wait()
	took = time.Since(start)
	close(done)
	return peakV.Load(), int(okN.Load()), took, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// execPinned runs bin pinned to cpu and returns its standard output.
func execPinned(ctx context.Context, cpu, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", cpu, bin}, args...)...)
	cmd.Stderr = os.Stderr
	return cmd.Output()
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(xs []time.Duration) time.Duration {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return time.Duration(median(f))
}

func minMax(xs []float64) (float64, float64) {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
}
