package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/tokend/tokend/bench/procstat"
)

// report prints the tables as each phase ends (Markdown, so they can be pasted into
// docs/benchmarks.md) and the verdicts at the end; progress goes to a separate writer.
type report struct {
	w, progress io.Writer

	bodySize int
	verdicts []verdict
}

type verdict struct {
	item, target, measured string
	ok                     bool
}

func (r *report) progressf(format string, args ...any) {
	fmt.Fprintf(r.progress, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (r *report) printf(format string, args ...any) { fmt.Fprintf(r.w, format, args...) }

func (r *report) check(item, target, measured string, ok bool) {
	r.verdicts = append(r.verdicts, verdict{item, target, measured, ok})
}

// machine prints what the numbers were measured on.
func (r *report) machine(ctx context.Context) {
	r.printf("## Machine\n\n")
	r.printf("- date: %s\n", time.Now().UTC().Format(time.RFC3339))
	r.printf("- CPU: %s, %d logical CPUs\n", cpuModel(), runtime.NumCPU())
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		r.printf("- kernel: Linux %s\n", strings.TrimSpace(string(b)))
	}
	r.printf("- Go: %s\n", runtime.Version())
	r.printf("- wrk: %s\n", firstLine(ctx, "wrk", "-v"))
	r.printf("- redis-server: %s\n", firstLine(ctx, "redis-server", "--version"))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.printf("- load average at start: %s\n", strings.Join(strings.Fields(string(b))[:3], " "))
	}
	r.printf("\n")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func firstLine(ctx context.Context, name string, args ...string) string {
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if line == "" {
		return "unknown"
	}
	return strings.TrimSpace(line)
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func (r *report) redis(window time.Duration, idle, busy map[string]int64, res wrkResult) {
	r.printf("## Store round trips on a cache hit\n\n")
	r.printf("Redis `INFO commandstats` after `CONFIG RESETSTAT`, over an idle window and over a window of token reads\n")
	r.printf("of the same length (%s each; the driver's own INFO and CONFIG are left out). Tokens live 2 h, so no\n", window)
	r.printf("refresh is due: what remains is tokend's background traffic (store health PING, subscription keep-alive).\n\n")
	r.printf("| window | token requests served | Redis commands |\n|---|---:|---|\n")
	r.printf("| idle %s | 0 | %s |\n", window, formatStats(idle))
	r.printf("| load %s | %d | %s |\n\n", window, res.Requests, formatStats(busy))
	// Background traffic is periodic, so a window may catch one tick more than the other.
	caused := int64(0)
	for name, n := range busy {
		caused += max(0, n-idle[name]-1)
	}
	r.check("2. store round trips on a hit", "0 commands caused by the load",
		fmt.Sprintf("%d requests; %d commands in the load window vs %d idle (%d beyond the periodic background)", res.Requests, total(busy), total(idle), caused),
		caused == 0)
}

// scaleResult is what the scale phase measured.
type scaleResult struct {
	apps              int
	maxRPS            float64
	ttl, margin       time.Duration
	serving, warmUp   time.Duration
	warmCalls         int
	warmLo, warmHi    int
	warmRate          rate
	memReady, memIdle procstat.Memory
	memEnd            procstat.Memory
	idleWindow        time.Duration
	idleCPU           float64
	idleCalls         int
	cycles            []cycle
	refreshCPU        time.Duration
	cycleCmds         map[string]int64
	metrics           metricsSample
}

// idleWithScrapes estimates the idle CPU use when Prometheus scrapes /metrics every 15 s.
func (s scaleResult) idleWithScrapes() float64 {
	return s.idleCPU + float64(s.metrics.ScrapeCPU)/float64(15*time.Second)
}

// cycle is one refresh cycle of the scale run: when every app had been refreshed once more, and the
// fewest and most upstream calls any app received in it.
type cycle struct {
	done   time.Duration
	lo, hi int
}

func (r *report) scale(s scaleResult) {
	budget := time.Duration(float64(s.apps) / s.maxRPS * float64(time.Second))
	warmRate := float64(s.warmCalls) / (s.warmUp - s.serving).Seconds()
	r.printf("## %d apps in one replica\n\n", s.apps)
	r.printf("One tokend with a real Redis; the fake DingTalk grants tokens for %s; `refresh.margin: %s`,\n", s.ttl, s.margin)
	r.printf("`upstream.max_rps: %g`. Times are from the process start.\n\n", s.maxRPS)
	r.printf("| measure | value |\n|---|---|\n")
	r.printf("| serving (config parsed, listeners up) | %.2f s |\n", s.serving.Seconds())
	r.printf("| ready (`/readyz` 200: every app fetched once) | %.2f s (%d apps ÷ %g/s = %.1f s) |\n", s.warmUp.Seconds(), s.apps, s.maxRPS, budget.Seconds())
	r.printf("| upstream calls in the warm-up | %d (per app: min %d, max %d) |\n", s.warmCalls, s.warmLo, s.warmHi)
	r.printf("| upstream rate in the warm-up | mean %.0f/s from serving to ready; most in one calendar second %d, in any 1 s %d, in any 10 s %d |\n",
		warmRate, s.warmRate.maxAligned, s.warmRate.maxSliding, s.warmRate.max10s)
	r.printf("| RSS when ready | %s |\n", procstat.MiB(s.memReady.RSS))
	r.printf("| idle CPU over %s after the warm-up | %.2f %% of one core (%d upstream calls in the window) |\n", s.idleWindow, 100*s.idleCPU, s.idleCalls)
	r.printf("| RSS after the idle window | %s |\n", procstat.MiB(s.memIdle.RSS))
	r.printf("| goroutines (idle) | %.0f |\n", s.metrics.Goroutines)
	r.printf("| Go heap allocated (idle, before the scrapes) | %s |\n", procstat.MiB(int64(s.metrics.HeapAlloc)))
	r.printf("| one `/metrics` scrape | %d series, %.1f MiB, %s CPU |\n", s.metrics.Series, float64(s.metrics.Bytes)/(1<<20), s.metrics.ScrapeCPU.Round(time.Millisecond))
	r.printf("| idle CPU with a scrape every 15 s (estimate) | %.2f %% of one core |\n", 100*s.idleWithScrapes())
	for i, c := range s.cycles {
		r.printf("| refresh cycle %d complete | at %.1f s; upstream calls per app in the cycle: min %d, max %d |\n", i+1, c.done.Seconds(), c.lo, c.hi)
	}
	refreshes := s.apps * len(s.cycles)
	if refreshes > 0 {
		r.printf("| CPU per refresh (cycles total) | %.2f ms (%s for %d refreshes) |\n", float64(s.refreshCPU.Microseconds())/1000/float64(refreshes), s.refreshCPU.Round(time.Millisecond), refreshes)
		r.printf("| Redis commands per refresh | %.1f (%s) |\n", float64(total(s.cycleCmds))/float64(refreshes), formatStats(s.cycleCmds))
	}
	r.printf("| RSS at the end (peak) | %s (%s) |\n\n", procstat.MiB(s.memEnd.RSS), procstat.MiB(s.memEnd.Peak))

	r.check("4. warm-up within the upstream budget", fmt.Sprintf("%g/s: ≤ %g in any 1 s, ≤ %g in any 10 s; 1 call per app", s.maxRPS, 2*s.maxRPS, 11*s.maxRPS),
		fmt.Sprintf("%d in 1 s, %d in 10 s; ready at %.1f s (%.0f calls/s); per app %d..%d", s.warmRate.maxSliding, s.warmRate.max10s, s.warmUp.Seconds(), warmRate, s.warmLo, s.warmHi),
		s.warmLo == 1 && s.warmHi == 1 && s.warmRate.within(s.maxRPS))
	cyclesOK := len(s.cycles) > 0
	var spread []string
	for _, c := range s.cycles {
		cyclesOK = cyclesOK && c.lo == 1 && c.hi == 1
		spread = append(spread, fmt.Sprintf("%d..%d", c.lo, c.hi))
	}
	r.check("4. one upstream call per app per refresh cycle", "exactly 1", "per app per cycle: "+strings.Join(spread, ", "), cyclesOK)
	peak := max(s.memReady.RSS, s.memIdle.RSS, s.memEnd.RSS)
	r.check("4. resident memory", "< 150 MiB", procstat.MiB(peak)+" (largest sample; peak RSS "+procstat.MiB(s.memEnd.Peak)+")", peak < 150<<20)
	r.check("4. no goroutine per app", fmt.Sprintf("goroutines independent of the %d apps", s.apps),
		fmt.Sprintf("%.0f goroutines at idle", s.metrics.Goroutines), s.metrics.Goroutines > 0 && s.metrics.Goroutines < 100)
	r.check("4. idle CPU between refreshes", "< 2 % of a core", fmt.Sprintf("%.2f %% (%.2f %% with a /metrics scrape every 15 s)", 100*s.idleCPU, 100*s.idleWithScrapes()), s.idleCPU < 0.02 && s.idleCalls == 0)
}

func (r *report) budget(b budgetResult) {
	r.printf("## Upstream budget shared by replicas\n\n")
	r.printf("%d tokend replicas share one Redis and start together with %d apps and `upstream.max_rps: %g`; the fake\n", b.replicas, b.apps, b.maxRPS)
	r.printf("DingTalk's issue times show the rate DingTalk sees during their warm-up.\n\n")
	var ws []string
	for _, d := range b.warmUp {
		ws = append(ws, fmt.Sprintf("%.1f s", d.Seconds()))
	}
	r.printf("| measure | value |\n|---|---|\n")
	r.printf("| replicas ready after | %s |\n", strings.Join(ws, ", "))
	r.printf("| upstream calls (tokens issued) | %d (%d) |\n", b.calls, b.issues)
	r.printf("| mean rate over the warm-up | %.1f calls/s over %.1f s |\n", b.mean, b.span.Seconds())
	r.printf("| most calls in one calendar second | %d |\n", b.maxAligned)
	r.printf("| most calls in any 1 s / any 10 s | %d / %d |\n\n", b.maxSliding, b.max10s)
	r.printf("The store counts calls in fixed 1 s windows of the Redis clock, so any 1 s span may hold two windows'\n")
	r.printf("worth (%g) and any 10 s span eleven (%g); one replica alone would be held to the same figures.\n\n", 2*b.maxRPS, 11*b.maxRPS)
	r.check("5. max_rps shared by all replicas", fmt.Sprintf("%d replicas together: ≤ %g in any 1 s, ≤ %g in any 10 s; 1 call per app", b.replicas, 2*b.maxRPS, 11*b.maxRPS),
		fmt.Sprintf("%d in 1 s, %d in 10 s, mean %.1f/s; %d calls for %d apps", b.maxSliding, b.max10s, b.mean, b.calls, b.apps),
		b.within(b.maxRPS) && b.calls == b.apps)
}

// warnings prints what tokend logged at WARN or ERROR during a phase.
func (r *report) warnings(counts map[string]int, firstErr map[string]string) {
	if len(counts) == 0 {
		r.printf("tokend logged no warnings or errors during this phase.\n\n")
		return
	}
	r.printf("tokend logged during this phase:\n\n")
	for msg, n := range counts {
		r.printf("- %q × %d (first error: %s)\n", msg, n, firstErr[msg])
	}
	r.printf("\n")
}

func (r *report) summary() {
	if len(r.verdicts) == 0 {
		return
	}
	r.printf("## Targets\n\n| issue item | target | measured | met |\n|---|---|---|---|\n")
	for _, v := range r.verdicts {
		met := "yes"
		if !v.ok {
			met = "**no**"
		}
		r.printf("| %s | %s | %s | %s |\n", v.item, v.target, v.measured, met)
	}
	r.printf("\n")
}
