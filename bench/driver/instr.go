package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The instr phase counts what the hot phase times: the same servers, request and load, each run
// under valgrind's callgrind, which counts the instructions a process executes in user space (its
// own code, the Go runtime and its garbage collector; not the kernel). The count does not depend
// on what else the machine runs: where the hot phase's CPU ratio moves by ±20 % between runs, this
// one repeats to a fraction of a percent. It sees nothing of the kernel's share (system calls, the
// loopback stack), which the hot phase's system column shows, nor of cache misses.
//
// Per side: a warm-up with counting off, then counting on (callgrind_control -i on) for one wrk run
// of -instr-duration, off, and a dump; instructions per request = the dump's total ÷ the requests wrk
// completed. callgrind runs the program on one thread at a time and about fifty times slower, so a
// window holds far fewer requests than a hot-phase run; the garbage collector's cycles in the window
// are counted (GODEBUG=gctrace=1) to show whether it held enough of them. Go's asynchronous
// preemption signals upset callgrind (GODEBUG=asyncpreemptoff=1).

// instrRun is what one counted window measured.
type instrRun struct {
	requests int64
	instr    uint64 // instructions executed in user space during the window
	gcs      int    // garbage-collection cycles that ended in the window
}

func (r instrRun) perReq() float64 {
	if r.requests == 0 {
		return 0
	}
	return float64(r.instr) / float64(r.requests)
}

func instrPhase(ctx context.Context, l *lab, o options, rep *report) error {
	defer l.stopAll()
	for _, tool := range []string{"valgrind", "callgrind_control"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the instr phase needs %s (Debian's valgrind package): %w", tool, err)
		}
	}
	wrap := []string{"env", "GODEBUG=asyncpreemptoff=1,gctrace=1", "valgrind", "--tool=callgrind", "--instr-atstart=no",
		"--callgrind-out-file=" + filepath.Join(l.dir, "callgrind.out.%p")}
	hs, err := startHotSides(ctx, l, o, rep, "instr", wrap)
	if err != nil {
		return err
	}
	defer hs.redis.c.Close()
	ld := o.ld
	ld.CPU = o.loadCPU
	runs := make([]instrRun, len(hs.sides))
	for i, s := range hs.sides {
		rep.progressf("instr: %s, %s counted", s.name, o.instrDuration)
		if runs[i], err = countInstr(ctx, l, ld, s, o.instrDuration); err != nil {
			return err
		}
		s.p.stop() // one valgrind at a time: the next side runs alone on the server's CPU
	}
	rep.instr(o, hs.sides, runs)
	return nil
}

// countInstr warms s up, then counts its instructions during one wrk run of d.
func countInstr(ctx context.Context, l *lab, ld load, s hotSide, d time.Duration) (instrRun, error) {
	warm := ld
	warm.Duration = 2 * time.Second
	if _, err := runWrk(ctx, warm, s.url); err != nil {
		return instrRun{}, err
	}
	pid := strconv.Itoa(s.p.pid())
	control := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "callgrind_control", append(args, pid)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("callgrind_control %s %s: %w\n%s", strings.Join(args, " "), pid, err, out)
		}
		return nil
	}
	gc0, err := countGCs(s.p.log)
	if err != nil {
		return instrRun{}, err
	}
	if err := control("-i", "on"); err != nil {
		return instrRun{}, err
	}
	ld.Duration = d
	res, err := runWrk(ctx, ld, s.url)
	if err != nil {
		return instrRun{}, err
	}
	if err := control("-i", "off"); err != nil {
		return instrRun{}, err
	}
	gc1, err := countGCs(s.p.log)
	if err != nil {
		return instrRun{}, err
	}
	if err := control("-d"); err != nil {
		return instrRun{}, err
	}
	if res.Non2xx > 0 {
		return instrRun{}, fmt.Errorf("%s answered %d requests with a non-2xx status", s.name, res.Non2xx)
	}
	n, err := callgrindTotal(filepath.Join(l.dir, "callgrind.out."+pid+".1"))
	if err != nil {
		return instrRun{}, err
	}
	return instrRun{requests: res.Requests, instr: n, gcs: gc1 - gc0}, nil
}

// countGCs counts the gctrace lines ("gc 12 @3.1s ...") in a log.
func countGCs(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "gc ") {
			n++
		}
	}
	return n, sc.Err()
}

// callgrindTotal reads the instruction total of a callgrind dump: the larger of its "totals:" and
// "summary:" lines (with counting switched on and off by callgrind_control, a dump's summary can
// read 0 while its totals hold the window's count).
func callgrindTotal(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("callgrind dump: %w", err)
	}
	var n uint64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "totals:")
		if !ok {
			v, ok = strings.CutPrefix(line, "summary:")
		}
		if !ok {
			continue
		}
		x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		n, found = max(n, x), true
	}
	if !found {
		return 0, fmt.Errorf("no totals in %s", path)
	}
	return n, nil
}

// instr prints the instruction counts of every side, and each one's ratio to the bare server's.
func (r *report) instr(o options, sides []hotSide, runs []instrRun) {
	r.printf("## Hot path in instructions: user-space work per request, counted by callgrind\n\n")
	r.printf("The hot phase's servers, request and load (`wrk -t%d -c%d`, servers pinned to CPU %s), each run under\n", o.ld.Threads, o.ld.Conns, orAny(o.serverCPU))
	r.printf("`valgrind --tool=callgrind` with counting on for one %s wrk run after a 2 s warm-up: instructions the\n", o.instrDuration)
	r.printf("process executed in user space (its code, the Go runtime, the garbage collector; not the kernel) ÷ requests\n")
	r.printf("served. Repeatable whatever else the machine runs; blind to system calls and cache misses. GC cycles: those\n")
	r.printf("that ended in the window (a side with few of them is counted with a share of its collector's cost that\n")
	r.printf("depends on where they fell). ratio = bare ÷ side.\n\n")
	r.printf("| side | requests | GC cycles | instructions/req | ratio to bare |\n|---|---:|---:|---:|---:|\n")
	for i, s := range sides {
		x := runs[i]
		r.printf("| %s | %d | %d | %.0f | %.3f |\n", s.name, x.requests, x.gcs, x.perReq(), runs[0].perReq()/x.perReq())
	}
	r.printf("\n")
}
