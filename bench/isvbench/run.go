package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokend/tokend/bench/procstat"
	"github.com/tokend/tokend/internal/config"
)

const (
	suiteKey    = "suitebench"
	suiteSecret = "suite-bench-secret"
	appName     = "saas"
	// tokendCPU is where the replicas run; the rest stays on the CPUs this program was given.
	tokendCPU = "0"
)

type options struct {
	bin     string
	corps   int
	maxRPS  float64
	conns   int
	idle    time.Duration
	scrapes int
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("isvbench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.bin, "bin", "", "directory holding the tokend and fakedingtalk binaries")
	fs.IntVar(&o.corps, "corps", 10000, "authorized corps of the suite")
	fs.Float64Var(&o.maxRPS, "max-rps", 400, "upstream.max_rps (shared by the replicas)")
	fs.IntVar(&o.conns, "conns", 64, "concurrent requests of the load")
	fs.DurationVar(&o.idle, "idle", 20*time.Second, "window of the idle CPU measurement")
	fs.IntVar(&o.scrapes, "scrapes", 100, "/metrics scrapes per server")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.bin == "" {
		return fmt.Errorf("-bin is required")
	}
	dir, err := os.MkdirTemp("", "isvbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.conns + 8}}

	// Redis, on a free port, nothing persisted.
	redisAddr, err := freeAddr()
	if err != nil {
		return err
	}
	port := redisAddr[strings.LastIndexByte(redisAddr, ':')+1:]
	rp, err := start(dir, "redis", "", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return err
	}
	procs = append(procs, rp)
	rc := redis.NewClient(&redis.Options{Addr: redisAddr, DisableIdentity: true})
	defer rc.Close()
	if err := poll(ctx, 10*time.Second, func() bool { return rp.alive() != nil || rc.Ping(ctx).Err() == nil }); err != nil || rp.alive() != nil {
		return fmt.Errorf("redis-server did not start; see %s", rp.log)
	}

	// The fake: 10 plain apps for the comparison, the suite and its corps through the control API.
	var apps strings.Builder
	for i := range 10 {
		fmt.Fprintf(&apps, "dingplain%02d:secret-plain-%02d\n", i, i)
	}
	appsFile := filepath.Join(dir, "apps.txt")
	if err := os.WriteFile(appsFile, []byte(apps.String()), 0o600); err != nil {
		return err
	}
	fakeAddr, err := freeAddr()
	if err != nil {
		return err
	}
	fp, err := start(dir, "fake", "", filepath.Join(o.bin, "fakedingtalk"), "-listen", fakeAddr, "-apps-file", appsFile, "-log-level", "warn")
	if err != nil {
		return err
	}
	procs = append(procs, fp)
	fake := "http://" + fakeAddr
	if err := poll(ctx, 20*time.Second, func() bool { return fp.alive() != nil || up(ctx, hc, fake+"/_fake/calls") }); err != nil || fp.alive() != nil {
		return fmt.Errorf("the fake did not start; see %s", fp.log)
	}
	progressf("fake at %s: adding the suite and authorizing %d corps", fakeAddr, o.corps)
	if _, err := call(ctx, hc, "POST", fake+"/_fake/isv/suites", "", map[string]any{"key": suiteKey, "secret": suiteSecret}, 204); err != nil {
		return err
	}
	corps := make([]string, o.corps)
	for i := range corps {
		corps[i] = fmt.Sprintf("dingcorp%05d", i)
	}
	if err := each(ctx, corps, 16, func(c string) error {
		_, err := call(ctx, hc, "POST", fake+"/_fake/isv/suites/"+suiteKey+"/corps/"+c+"/authorize", "", nil, 204)
		return err
	}); err != nil {
		return err
	}
	body, err := call(ctx, hc, "POST", fake+"/_fake/isv/suites/"+suiteKey+"/tickets", "", nil, 200)
	if err != nil {
		return err
	}
	var minted struct {
		SuiteTicket string `json:"suite_ticket"`
	}
	if err := json.Unmarshal(body, &minted); err != nil {
		return err
	}

	key, _, err := config.GenerateKey()
	if err != nil {
		return err
	}
	sum := config.HashKey(key)
	keyHash := hex.EncodeToString(sum[:])

	// Two replicas, one suite with pushed tickets (no callback: the Stream subscription runs on one).
	isvApps := fmt.Sprintf("  - name: %s\n    type: dingtalk_isv\n    suite_key: %s\n    suite_secret: %s\n", appName, suiteKey, suiteSecret)
	isvClient := "    suite_tickets: [" + appName + "]\n"
	var reps []*tokend
	for i := range 2 {
		t, err := startTokend(ctx, hc, o.bin, dir, fmt.Sprintf("tokend-isv-%d", i), redisAddr, fake, "isvbench", o.maxRPS, isvApps, keyHash, isvClient)
		if err != nil {
			return err
		}
		procs = append(procs, t.proc)
		reps = append(reps, t)
	}
	if _, err := call(ctx, hc, "PUT", "http://"+reps[0].api+"/v1/apps/"+appName+"/suite_ticket", key,
		map[string]string{"suite_ticket": minted.SuiteTicket}, 204); err != nil {
		return fmt.Errorf("suite ticket: %w", err)
	}

	// The load: each corp once, corp i from replica i%2.
	progressf("serving %d corps lazily at max_rps %g over %d connections", o.corps, o.maxRPS, o.conns)
	cpu0 := make([]time.Duration, 2)
	for i, t := range reps {
		if cpu0[i], err = procstat.CPUTime(t.pid()); err != nil {
			return err
		}
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		statuses = map[int]int{}
		retried  atomic.Int64
	)
	idx := make(map[string]int, len(corps))
	for i, c := range corps {
		idx[c] = i
	}
	t0 := time.Now()
	err = each(ctx, corps, o.conns, func(c string) error {
		url := "http://" + reps[idx[c]%2].api + "/v1/apps/" + appName + "/corps/" + c + "/access_token"
		for attempt := 0; ; attempt++ {
			s := time.Now()
			code, err := status(ctx, hc, url, key)
			d := time.Since(s)
			mu.Lock()
			statuses[code]++
			if code == 200 {
				lat = append(lat, d)
			}
			mu.Unlock()
			if code == 200 {
				return nil
			}
			if attempt == 4 {
				return fmt.Errorf("corp %s: status %d (%v) after 5 attempts", c, code, err)
			}
			retried.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	})
	took := time.Since(t0)
	if err != nil {
		return err
	}
	loadCPU := make([]time.Duration, 2)
	for i, t := range reps {
		c, err := procstat.CPUTime(t.pid())
		if err != nil {
			return err
		}
		loadCPU[i] = c - cpu0[i]
	}

	// Upstream calls per corp.
	body, err = call(ctx, hc, "GET", fake+"/_fake/isv/calls", "", nil, 200)
	if err != nil {
		return err
	}
	var counts map[string]map[string]struct {
		Token  int `json:"token"`
		Ticket int `json:"ticket"`
		Stream int `json:"stream"`
	}
	if err := json.Unmarshal(body, &counts); err != nil {
		return err
	}
	perCorp := map[int]int{} // token calls → corps
	for _, c := range corps {
		perCorp[counts[suiteKey][c].Token]++
	}
	suiteCalls := counts[suiteKey][""].Token

	rssAfter := make([]int64, 2)
	for i, t := range reps {
		if rssAfter[i], err = procstat.RSS(t.pid()); err != nil {
			return err
		}
	}
	progressf("idle for %v", o.idle)
	idle := make([]float64, 2)
	i0 := make([]time.Duration, 2)
	for i, t := range reps {
		if i0[i], err = procstat.CPUTime(t.pid()); err != nil {
			return err
		}
	}
	w0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.idle):
	}
	window := time.Since(w0)
	for i, t := range reps {
		c, err := procstat.CPUTime(t.pid())
		if err != nil {
			return err
		}
		idle[i] = float64(c-i0[i]) / float64(window)
	}
	rssIdle := make([]int64, 2)
	for i, t := range reps {
		if rssIdle[i], err = procstat.RSS(t.pid()); err != nil {
			return err
		}
	}

	progressf("scraping /metrics %d times per server", o.scrapes)
	isvScrape := make([]scrapeCost, 2)
	for i, t := range reps {
		if isvScrape[i], err = scrape(ctx, hc, t, o.scrapes); err != nil {
			return err
		}
	}
	for _, t := range reps {
		t.stop()
	}

	var plainApps strings.Builder
	for i := range 10 {
		fmt.Fprintf(&plainApps, "  - {name: plain%02d, type: dingtalk, client_id: dingplain%02d, client_secret: secret-plain-%02d}\n", i, i, i)
	}
	plain, err := startTokend(ctx, hc, o.bin, dir, "tokend-plain", redisAddr, fake, "isvbench-plain", o.maxRPS, plainApps.String(), keyHash, "")
	if err != nil {
		return err
	}
	procs = append(procs, plain.proc)
	if err := poll(ctx, 60*time.Second, func() bool { return plain.alive() != nil || up(ctx, hc, "http://"+plain.ops+"/readyz") }); err != nil {
		return fmt.Errorf("tokend with 10 apps not ready: %v", err)
	}
	plainScrape, err := scrape(ctx, hc, plain, o.scrapes)
	if err != nil {
		return err
	}

	// Report.
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Millisecond)
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Printf("### One suite, %d corps, 2 replicas\n\n", o.corps)
	fmt.Printf("`upstream.max_rps: %g` (shared by the replicas; proxy.max_rps %g, unused), %d concurrent requests, corp i from replica i%%2, each corp's token requested once.\n\n", o.maxRPS, proxyRPS(o.maxRPS), o.conns)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| time to serve all %d corps | %v (%.0f corps/s; budget allows %g/s) |\n", o.corps, took.Round(100*time.Millisecond), float64(o.corps)/took.Seconds(), o.maxRPS)
	fmt.Printf("| latency p50 / p99 / max | %v / %v / %v |\n", pct(0.5), pct(0.99), pct(1))
	fmt.Printf("| answers | %s (retries %d) |\n", statusList(statuses), retried.Load())
	fmt.Printf("| suite token calls | %d |\n", suiteCalls)
	fmt.Printf("| corp token calls per corp | %s |\n", perCorpList(perCorp))
	for i := range reps {
		fmt.Printf("| replica %d: CPU during the load | %v |\n", i, loadCPU[i].Round(10*time.Millisecond))
		fmt.Printf("| replica %d: RSS after the load / after the idle window | %s / %s |\n", i, procstat.MiB(rssAfter[i]), procstat.MiB(rssIdle[i]))
		fmt.Printf("| replica %d: idle CPU over %v | %.2f%% of a core |\n", i, window.Round(100*time.Millisecond), idle[i]*100)
	}
	fmt.Printf("\n### /metrics scrape cost (%d scrapes each, sequential)\n\n", o.scrapes)
	fmt.Printf("| server | bytes | server CPU per scrape | wall per scrape |\n|---|---|---|---|\n")
	for i, s := range isvScrape {
		fmt.Printf("| ISV replica %d (%d corps) | %d | %v | %v |\n", i, o.corps, s.bytes, s.cpu.Round(10*time.Microsecond), s.wall.Round(10*time.Microsecond))
	}
	fmt.Printf("| 10 plain apps | %d | %v | %v |\n", plainScrape.bytes, plainScrape.cpu.Round(10*time.Microsecond), plainScrape.wall.Round(10*time.Microsecond))

	exact := perCorp[1] == o.corps
	worstRSS := max(rssAfter[0], rssAfter[1], rssIdle[0], rssIdle[1])
	ratioB := float64(max(isvScrape[0].bytes, isvScrape[1].bytes)) / float64(max(plainScrape.bytes, 1))
	ratioC := float64(max(isvScrape[0].cpu, isvScrape[1].cpu)) / float64(max(plainScrape.cpu, time.Microsecond))
	fmt.Printf("\nGoals: exactly 1 corp token call per corp: **%s**; RSS < 200 MiB (worst %s): **%s**; ", verdict(exact), procstat.MiB(worstRSS), verdict(worstRSS < 200<<20))
	fmt.Printf("scrape cost the same order as 10 apps (bytes ×%.1f, CPU ×%.1f): **%s**.\n", ratioB, ratioC, verdict(ratioB < 10 && ratioC < 10))
	return nil
}

// tokend is a running replica.
type tokend struct {
	*proc
	api, ops string
}

func startTokend(ctx context.Context, hc *http.Client, bin, dir string, name, redisAddr, fake, prefix string, maxRPS float64, apps, keyHash, clientExtra string) (*tokend, error) {
	api, err1 := freeAddr()
	ops, err2 := freeAddr()
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("no free ports")
	}
	cfg := fmt.Sprintf("listen: %s\nops_listen: %s\nlog: {level: warn, format: json}\n"+
		"store:\n  redis: {url: \"redis://%s/0\", key_prefix: %s}\n"+
		"upstream: {max_rps: %g}\nproxy: {max_rps: %g}\n"+
		"dingtalk: {api_base: %q, oapi_base: %q}\n"+
		"apps:\n%s"+
		"clients:\n  - name: bench\n    key_sha256: %s\n    apps: [\"*\"]\n%s",
		api, ops, redisAddr, prefix, maxRPS, proxyRPS(maxRPS), fake, fake, apps, keyHash, clientExtra)
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := start(dir, name, tokendCPU, filepath.Join(bin, "tokend"), "-config", path)
	if err != nil {
		return nil, err
	}
	t := &tokend{proc: p, api: api, ops: ops}
	if err := poll(ctx, 60*time.Second, func() bool { return p.alive() != nil || up(ctx, hc, "http://"+ops+"/healthz") }); err != nil || p.alive() != nil {
		p.stop()
		out, _ := os.ReadFile(p.log)
		return nil, fmt.Errorf("%s did not serve: %.2000s", name, out)
	}
	return t, nil
}

// proxyRPS is proxy.max_rps: what the egress bound (upstream + proxy ≤ 450) leaves, the proxy being unused here.
func proxyRPS(upstream float64) float64 { return max(450-upstream, 1) }

type scrapeCost struct {
	bytes     int
	cpu, wall time.Duration
}

// scrape GETs /metrics n times after one warm-up and returns the mean cost.
func scrape(ctx context.Context, hc *http.Client, t *tokend, n int) (scrapeCost, error) {
	url := "http://" + t.ops + "/metrics"
	get := func() (int, error) {
		b, err := call(ctx, hc, "GET", url, "", nil, 200)
		return len(b), err
	}
	if _, err := get(); err != nil {
		return scrapeCost{}, err
	}
	c0, err := procstat.CPUTime(t.pid())
	if err != nil {
		return scrapeCost{}, err
	}
	w0 := time.Now()
	total := 0
	for range n {
		b, err := get()
		if err != nil {
			return scrapeCost{}, err
		}
		total += b
	}
	wall := time.Since(w0)
	c1, err := procstat.CPUTime(t.pid())
	if err != nil {
		return scrapeCost{}, err
	}
	return scrapeCost{bytes: total / n, cpu: (c1 - c0) / time.Duration(n), wall: wall / time.Duration(n)}, nil
}

// call sends a request (body as JSON when not nil) and wants the status want.
func call(ctx context.Context, hc *http.Client, method, url, key string, body any, want int) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: status %d, want %d: %.200s", method, req.URL.Path, resp.StatusCode, want, b)
	}
	return b, nil
}

// status GETs url with key and returns the status code (0 on a transport error), draining the body.
func status(ctx context.Context, hc *http.Client, url, key string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// each calls f for every item over n workers and returns the first error.
func each(ctx context.Context, items []string, n int, f func(string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if err := f(it); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
	for _, it := range items {
		select {
		case work <- it:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(work)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

func statusList(m map[int]int) string {
	var parts []string
	for code, n := range m {
		parts = append(parts, fmt.Sprintf("%d × %d", n, code))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func perCorpList(m map[int]int) string {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%d corps: %d call(s)", m[k], k))
	}
	return strings.Join(parts, "; ")
}

func progressf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
