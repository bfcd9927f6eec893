// Command driver runs tokend's end-to-end benchmarks for bench/run.sh and prints their tables:
//
//   - hot: wrk against an authenticated GET /v1/apps/{app}/access_token served from memory, against
//     a bare net/http server with Go's defaults (bench/baseline) returning the same bytes, and against
//     the same with tokend's timeouts; servers and wrk pinned to different CPUs, rounds interleaved,
//     server CPU per request from /proc (see hot.go);
//   - redis: Redis INFO commandstats over an idle window and over a load window of the same length;
//   - scale: 10 000 apps in one replica: warm-up time within the upstream budget, resident memory,
//     idle CPU, and upstream calls per app per refresh cycle;
//   - budget: two replicas sharing one Redis, and the rate DingTalk (the fake) sees during their
//     warm-up against upstream.max_rps;
//   - instr (not run by default): the hot phase's servers under valgrind's callgrind, instructions
//     per request in user space, a count no neighbour's load moves (see instr.go).
//
// Every process runs on loopback and is stopped when the driver returns (or dies: they get SIGKILL
// with their parent). Usage: driver -bin DIR [flags]; DIR holds tokend, fakedingtalk and baseline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

// options are the driver's flags.
type options struct {
	bin    string
	phases map[string]bool
	keep   bool

	ld     load
	rounds int
	// instrDuration is the counted window of each side in the instr phase.
	instrDuration time.Duration
	// The hot phase: tokend binaries and log levels to compare, clients configured, CPUs to pin the
	// servers and the load generator to, and where to store CPU profiles ("" for none).
	tokends       tokendBins
	baselines     baselineSpecs
	levels        []string
	clients       int
	serverCPU     string
	loadCPU       string
	profileDir    string
	profilePrefix string
	window        time.Duration // redis phase window

	scaleApps   int
	scaleRPS    float64
	scaleTTL    time.Duration
	scaleMargin time.Duration
	scaleIdle   time.Duration
	scaleCycles int

	budgetApps     int
	budgetRPS      float64
	budgetReplicas int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("driver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var phases string
	fs.StringVar(&o.bin, "bin", "", "`dir`ectory holding the tokend, fakedingtalk and baseline binaries")
	fs.StringVar(&phases, "phases", "hot,redis,scale,budget", "comma-separated phases to run (also: instr, the hot phase's sides under callgrind)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs) after the run")
	fs.IntVar(&o.ld.Threads, "threads", 1, "wrk threads")
	fs.IntVar(&o.ld.Conns, "connections", 64, "wrk connections")
	fs.DurationVar(&o.ld.Duration, "duration", 5*time.Second, "length of one wrk run")
	fs.DurationVar(&o.ld.Pace, "pace", 0, "hot phase: each wrk connection waits this long (whole ms) between a response and its next request, so every server gets the same offered rate (0: wrk's closed loop, as fast as each server answers)")
	fs.DurationVar(&o.instrDuration, "instr-duration", 60*time.Second, "instr phase: length of each side's counted wrk run")
	fs.IntVar(&o.rounds, "rounds", 7, "rounds of the hot-path comparison (every side once per round)")
	fs.Var(&o.tokends, "tokend", "`label=path` of a tokend binary to compare (repeatable; default tokend=DIR/tokend)")
	fs.Var(&o.baselines, "baseline", "`name=flags`: one more baseline side, bench/baseline run with these flags (repeatable)")
	var levels string
	fs.StringVar(&levels, "levels", "info,debug", "comma-separated log.level values to run each tokend with in the hot phase")
	fs.IntVar(&o.clients, "clients", 100, "clients configured in the hot phase's tokend")
	fs.StringVar(&o.serverCPU, "server-cpu", "1", "CPU list (taskset -c) for the servers of the hot phase; empty: no pinning")
	fs.StringVar(&o.loadCPU, "load-cpu", "0", "CPU list (taskset -c) for wrk, Redis and the fake in the hot phase; empty: no pinning")
	fs.StringVar(&o.profileDir, "profile-dir", "", "`dir`ectory to store CPU profiles into: of the bare server and of each tokend labelled \"tokend\" (pprof on its ops port)")
	fs.StringVar(&o.profilePrefix, "profile-prefix", "", "file name prefix of the stored profiles")
	fs.DurationVar(&o.window, "redis-window", 10*time.Second, "length of the idle and load windows of the redis phase")
	fs.IntVar(&o.scaleApps, "scale-apps", 10000, "apps in the scale run")
	fs.Float64Var(&o.scaleRPS, "scale-max-rps", 400, "upstream.max_rps of the scale run")
	fs.DurationVar(&o.scaleTTL, "scale-ttl", 120*time.Second, "token lifetime the fake grants in the scale run")
	fs.DurationVar(&o.scaleMargin, "scale-margin", 30*time.Second, "refresh.margin of the scale run")
	fs.DurationVar(&o.scaleIdle, "scale-idle", 30*time.Second, "idle CPU measurement window of the scale run")
	fs.IntVar(&o.scaleCycles, "scale-cycles", 2, "refresh cycles to watch in the scale run")
	fs.IntVar(&o.budgetApps, "budget-apps", 1000, "apps in the shared-budget run")
	fs.Float64Var(&o.budgetRPS, "budget-max-rps", 50, "upstream.max_rps of the shared-budget run")
	fs.IntVar(&o.budgetReplicas, "budget-replicas", 2, "replicas in the shared-budget run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.bin == "" {
		return errors.New("-bin is required")
	}
	o.ld.Key = benchKey
	if len(o.tokends) == 0 {
		o.tokends = tokendBins{{"tokend", filepath.Join(o.bin, "tokend")}}
	}
	for _, lv := range strings.Split(levels, ",") {
		if lv = strings.TrimSpace(lv); lv != "" {
			o.levels = append(o.levels, lv)
		}
	}
	if len(o.levels) == 0 {
		o.levels = []string{"info"}
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		switch p = strings.TrimSpace(p); p {
		case "hot", "redis", "scale", "budget", "instr":
			o.phases[p] = true
		default:
			return fmt.Errorf("unknown phase %q", p)
		}
	}

	dir, err := os.MkdirTemp("", "tokend-bench-")
	if err != nil {
		return err
	}
	l := &lab{dir: dir, bin: o.bin, hc: &http.Client{Timeout: 10 * time.Second}}
	defer func() {
		l.stopAll()
		if o.keep {
			fmt.Fprintf(stderr, "work directory kept: %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()

	rep := &report{w: stdout, progress: stderr}
	rep.machine(ctx)
	if o.phases["hot"] || o.phases["redis"] {
		if err := hotPhases(ctx, l, o, rep); err != nil {
			return err
		}
	}
	if o.phases["instr"] {
		if err := instrPhase(ctx, l, o, rep); err != nil {
			return err
		}
	}
	if o.phases["scale"] {
		if err := scalePhase(ctx, l, o, rep); err != nil {
			return err
		}
	}
	if o.phases["budget"] {
		if err := budgetPhase(ctx, l, o, rep); err != nil {
			return err
		}
	}
	rep.summary()
	return nil
}
