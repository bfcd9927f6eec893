package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/bench/procstat"
)

// The hot phase compares servers answering the same request with the same bytes:
//
//   - bare: bench/baseline with Go's default http.Server, the reference of the goal;
//   - bare+timeouts: the same with tokend's connection limits, to show what those cost apart;
//   - bare+heapfloor: bare with tokend's GC heap floor (internal/heapfloor), the same apart;
//   - one tokend per binary and log level, each with a real Redis, the fake DingTalk and
//     -clients configured clients (the benchmark's own key hashed last).
//
// The servers run pinned to one CPU and wrk to the other (taskset), so that the load generator
// and the server under test do not take turns on a core. Rounds are interleaved (every side once per
// round, in an order rotated each round) so that a neighbour's burst of work hurts every side alike,
// and the figure that decides is the server's CPU time per request, from /proc/PID/stat: it does not
// depend on who else runs on the load generator's core.

// hotSide is one server of the comparison.
type hotSide struct {
	name string
	p    *proc
	url  string
	ops  string // where /debug/pprof/profile answers: tokend's ops address, the bare server's pprof; or ""
}

// hotRun is what one wrk run against one side measured.
type hotRun struct {
	wrkResult
	cpu procstat.CPU // the server's CPU time during the run
}

// perReq is CPU time (user+system) per request in microseconds.
func (h hotRun) perReq() float64 { return h.per(h.cpu.User + h.cpu.System) }

// per is d per request in microseconds.
func (h hotRun) per(d time.Duration) float64 {
	if h.Requests == 0 {
		return 0
	}
	return float64(d.Nanoseconds()) / 1000 / float64(h.Requests)
}

// tokendBin is a tokend binary to measure: a label for the tables and its path.
type tokendBin struct{ label, path string }

// tokendBins parses -tokend values: "label=path" (or just a path, labelled by its base name).
type tokendBins []tokendBin

func (b *tokendBins) String() string {
	var s []string
	for _, t := range *b {
		s = append(s, t.label+"="+t.path)
	}
	return strings.Join(s, ",")
}

func (b *tokendBins) Set(v string) error {
	label, path, ok := strings.Cut(v, "=")
	if !ok {
		label, path = filepath.Base(v), v
	}
	if label == "" || path == "" {
		return fmt.Errorf("-tokend %q: want label=path", v)
	}
	*b = append(*b, tokendBin{label, path})
	return nil
}

// baselineSpec is one more baseline side: a name and bench/baseline's flags.
type baselineSpec struct {
	name string
	args []string
}

// baselineSpecs parses -baseline values: "name=-server default -write-timeout 45s".
type baselineSpecs []baselineSpec

func (b *baselineSpecs) String() string { return fmt.Sprint(*b) }

func (b *baselineSpecs) Set(v string) error {
	name, args, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("-baseline %q: want name=flags", v)
	}
	*b = append(*b, baselineSpec{name, strings.Fields(args)})
	return nil
}

// hotPhases runs the hot-path comparison and the Redis round-trip check.
func hotPhases(ctx context.Context, l *lab, o options, rep *report) error {
	defer l.stopAll()
	hs, err := startHotSides(ctx, l, o, rep, "hot", nil)
	if err != nil {
		return err
	}
	defer hs.redis.c.Close()
	if o.phases["hot"] {
		if err := hotRounds(ctx, o, rep, hs.sides); err != nil {
			return err
		}
	}
	if o.phases["redis"] {
		if err := redisWindows(ctx, o, rep, hs.redis, hs.sides[hs.bases].url); err != nil {
			return err
		}
	}
	warnings(rep, "hot", hs.first)
	return nil
}

// hotSides are the servers of the hot phase, started: the baselines first, then every tokend.
type hotSides struct {
	sides []hotSide
	bases int // how many of sides are baselines
	first *tokendProc
	redis *redisServer
}

// startHotSides starts Redis, the fake DingTalk and every server of the hot phase, the servers
// pinned to -server-cpu and run through wrap (a command and its flags, which exec the server in the
// same process: valgrind for the instr phase), if any.
func startHotSides(ctx context.Context, l *lab, o options, rep *report, phase string, wrap []string) (hs hotSides, err error) {
	rep.progressf("%s: starting redis-server, the fake DingTalk, %d tokend and %d baselines", phase, len(o.tokends)*len(o.levels), 3+len(o.baselines))
	l.cpu = o.loadCPU
	rs, err := l.startRedis(ctx, "redis-"+phase)
	if err != nil {
		return hs, err
	}
	defer func() {
		if err != nil {
			rs.c.Close()
		}
	}()
	apps := makeApps(1)
	appsFile, err := l.writeAppsFile("apps-"+phase+".txt", apps)
	if err != nil {
		return hs, err
	}
	_, fake, err := l.startAddr(ctx, "fake-"+phase, filepath.Join(l.bin, "fakedingtalk"),
		[]string{"-listen", "127.0.0.1:0", "-apps-file", appsFile, "-log-level", "warn"})
	if err != nil {
		return hs, err
	}

	l.cpu, l.wrap = o.serverCPU, wrap
	defer func() { l.cpu, l.wrap = "", nil }()
	profiles := o.profileDir != "" && wrap == nil
	var sides []hotSide
	var first *tokendProc
	var body []byte
	for _, bin := range o.tokends {
		for _, level := range o.levels {
			name := bin.label + " " + level
			setup := tokendSetup{Redis: rs.addr, Fake: fake, Apps: apps, Margin: 10 * time.Minute, MaxRPS: 50,
				Bin: bin.path, LogLevel: level, Clients: o.clients, Pprof: profiles && bin.label == "tokend"}
			t, err := l.startTokend(ctx, phase+"-tokend-"+strings.ReplaceAll(name, " ", "-"), setup)
			if err != nil {
				return hs, err
			}
			if _, err := l.waitReady(ctx, t, 2*time.Minute); err != nil {
				return hs, err
			}
			url := "http://" + t.api + "/v1/apps/" + apps[0].name + "/access_token"
			code, b, err := l.get(ctx, url, benchKey)
			if err != nil || code != 200 {
				return hs, fmt.Errorf("%s token request: status %d, err %v", name, code, err)
			}
			if first == nil {
				first, body = t, b
			}
			ops := ""
			if setup.Pprof {
				ops = t.ops
			}
			sides = append(sides, hotSide{name: name, p: t.proc, url: url, ops: ops})
		}
	}
	var bases []hotSide
	specs := append(baselineSpecs{{"bare", []string{"-server", "default"}}, {"bare+timeouts", []string{"-server", "tokend"}}, {"bare+heapfloor", []string{"-server", "default", "-heap-floor"}}}, o.baselines...)
	for i, spec := range specs {
		name := spec.name
		args := []string{"-listen", "127.0.0.1:0", "-size", strconv.Itoa(len(body))}
		pprofAddr := ""
		if profiles && i == 0 { // the bare server's profile, to compare tokend's with
			port, err := freePort()
			if err != nil {
				return hs, err
			}
			pprofAddr = "127.0.0.1:" + strconv.Itoa(port)
			args = append(args, "-pprof-listen", pprofAddr)
		}
		p, addr, err := l.startAddr(ctx, fmt.Sprintf("%s-baseline-%d", phase, i), filepath.Join(l.bin, "baseline"), append(args, spec.args...))
		if err != nil {
			return hs, err
		}
		url := "http://" + addr + "/"
		if code, b, err := l.get(ctx, url, benchKey); err != nil || code != 200 || len(b) != len(body) {
			return hs, fmt.Errorf("%s answers status %d with %d bytes (err %v), want 200 with %d", name, code, len(b), err, len(body))
		}
		bases = append(bases, hotSide{name: name, p: p, url: url, ops: pprofAddr})
	}
	rep.bodySize = len(body)
	return hotSides{sides: append(bases, sides...), bases: len(bases), first: first, redis: rs}, nil
}

func hotRounds(ctx context.Context, o options, rep *report, sides []hotSide) error {
	ld := o.ld
	ld.CPU = o.loadCPU
	rep.progressf("hot: warming every server up")
	warm := ld
	warm.Duration = 2 * time.Second
	for _, s := range sides {
		if _, err := runWrk(ctx, warm, s.url); err != nil {
			return err
		}
	}
	runs := make([][]hotRun, o.rounds) // [round][side]
	for r := range o.rounds {
		runs[r] = make([]hotRun, len(sides))
		for k := range sides {
			i := (k + r) % len(sides) // rotate the order: no side always follows the same one
			s := sides[i]
			rep.progressf("hot: round %d/%d, %s", r+1, o.rounds, s.name)
			run, err := measure(ctx, ld, s)
			if err != nil {
				return err
			}
			runs[r][i] = run
		}
	}
	rep.hot(o, sides, runs)
	if o.profileDir != "" {
		for _, s := range sides {
			if s.ops == "" {
				continue
			}
			path := filepath.Join(o.profileDir, o.profilePrefix+strings.ReplaceAll(s.name, " ", "-")+".cpu.pprof")
			rep.progressf("hot: CPU profile of %s under the same load into %s", s.name, path)
			if err := profile(ctx, ld, s, path); err != nil {
				return err
			}
			rep.printf("CPU profile of %s under the same load, after the rounds: `%s` (`go tool pprof -top %s`).\n\n", s.name, filepath.Base(path), filepath.Base(path))
		}
	}
	return nil
}

// measure runs wrk once against s and reads s's CPU time around it.
func measure(ctx context.Context, ld load, s hotSide) (hotRun, error) {
	c0, err := procstat.CPUTimes(s.p.pid())
	if err != nil {
		return hotRun{}, err
	}
	res, err := runWrk(ctx, ld, s.url)
	if err != nil {
		return hotRun{}, err
	}
	c1, err := procstat.CPUTimes(s.p.pid())
	if err != nil {
		return hotRun{}, err
	}
	if res.Non2xx > 0 {
		return hotRun{}, fmt.Errorf("%s answered %d requests with a non-2xx status", s.name, res.Non2xx)
	}
	return hotRun{wrkResult: res, cpu: c1.Sub(c0)}, nil
}

// profile fetches a CPU profile from tokend's /debug/pprof/profile while wrk loads it as in a round.
func profile(ctx context.Context, ld load, s hotSide, path string) error {
	secs := max(1, int(ld.Duration.Seconds()))
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.ops, secs)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			done <- result{err: err}
			return
		}
		resp, err := (&http.Client{Timeout: time.Duration(secs+30) * time.Second}).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		done <- result{b, err}
	}()
	if _, err := runWrk(ctx, ld, s.url); err != nil {
		return err
	}
	res := <-done
	if res.err != nil {
		return fmt.Errorf("profile of %s: %w", s.name, res.err)
	}
	return os.WriteFile(path, res.b, 0o644)
}

func redisWindows(ctx context.Context, o options, rep *report, rs *redisServer, url string) error {
	rep.progressf("redis: %s idle window", o.window)
	if err := rs.resetStats(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.window): // real time is what is measured
	}
	idle, err := rs.commandStats(ctx)
	if err != nil {
		return err
	}
	rep.progressf("redis: %s load window", o.window)
	if err := rs.resetStats(ctx); err != nil {
		return err
	}
	ld := o.ld
	ld.CPU = o.loadCPU
	ld.Duration = o.window
	res, err := runWrk(ctx, ld, url)
	if err != nil {
		return err
	}
	busy, err := rs.commandStats(ctx)
	if err != nil {
		return err
	}
	rep.redis(o.window, idle, busy, res)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// hot prints the per-round table and the summary of every side. The ratio is the bare server's CPU
// per request divided by the side's, in the same round: 1 means as cheap as Go's default server.
func (r *report) hot(o options, sides []hotSide, runs [][]hotRun) {
	r.printf("## Hot path: tokend vs a bare net/http server\n\n")
	r.printf("Authenticated `GET /v1/apps/crm/access_token` served from memory (tokend with a real Redis, the fake\n")
	r.printf("DingTalk and %d configured clients, the benchmark's key hashed last) against `bench/baseline` answering a\n", o.clients)
	r.printf("constant %d-byte JSON body with the same headers; the same request (Authorization header included) to\n", r.bodySize)
	r.printf("every side; servers pinned to CPU %s, `wrk -t%d -c%d -d%s --latency` pinned to CPU %s; %d rounds, every side\n",
		orAny(o.serverCPU), o.ld.Threads, o.ld.Conns, o.ld.Duration, orAny(o.loadCPU), o.rounds)
	if o.ld.Pace > 0 {
		r.printf("paced (each connection waits %s between a response and its next request: about the same offered rate for every side), ", o.ld.Pace)
	}
	r.printf("once per round in a rotating order. CPU/req = the server's user+system CPU time during the run (from\n")
	r.printf("`/proc/PID/stat`) ÷ requests served, and its two parts: user (the process's own code) and system (the kernel on\n")
	r.printf("its behalf: its system calls and the loopback network stack under them); ratio = bare CPU/req ÷ the side's\n")
	r.printf("CPU/req in the same round.\n\n")
	r.printf("| round | side | req/s | p50 | p99 | CPU/req | user | system | CPU ratio |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for rd, row := range runs {
		for i, s := range sides {
			h := row[i]
			r.printf("| %d | %s | %.0f | %s | %s | %.2f µs | %.2f µs | %.2f µs | %.3f |\n", rd+1, s.name, h.RPS, ms(h.P50), ms(h.P99),
				h.perReq(), h.per(h.cpu.User), h.per(h.cpu.System), row[0].perReq()/h.perReq())
		}
	}
	r.printf("\nMedians over the rounds (min–max in brackets):\n\n")
	r.printf("| side | req/s | p99 | CPU/req | user | system | CPU ratio to bare |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for i, s := range sides {
		var rps, p99, cpu, usr, sys, ratio []float64
		for _, row := range runs {
			h := row[i]
			rps, p99 = append(rps, h.RPS), append(p99, float64(h.P99))
			cpu, ratio = append(cpu, h.perReq()), append(ratio, row[0].perReq()/h.perReq())
			usr, sys = append(usr, h.per(h.cpu.User)), append(sys, h.per(h.cpu.System))
		}
		r.printf("| %s | %.0f | %s | %.2f µs (%.2f–%.2f) | %.2f µs | %.2f µs | **%.3f** (%.3f–%.3f) |\n", s.name, median(rps), ms(time.Duration(median(p99))),
			median(cpu), minOf(cpu), maxOf(cpu), median(usr), median(sys), median(ratio), minOf(ratio), maxOf(ratio))
		if strings.HasPrefix(s.name, "tokend ") {
			m := median(ratio)
			r.check("hot path: "+s.name+" server CPU vs bare net/http", "≥ 0.90",
				fmt.Sprintf("%.3f (median of %d rounds; min %.3f, max %.3f)", m, len(ratio), minOf(ratio), maxOf(ratio)), m >= 0.9)
		}
	}
	r.printf("\n")
}

func orAny(cpu string) string {
	if cpu == "" {
		return "(any)"
	}
	return cpu
}
