package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/tokend/tokend/bench/procstat"
)

// scalePhase runs one replica with many apps: warm-up, idle, and refresh cycles.
func scalePhase(ctx context.Context, l *lab, o options, rep *report) error {
	defer l.stopAll()
	n := o.scaleApps
	rep.progressf("scale: starting redis-server, the fake DingTalk (%d apps, tokens live %s) and tokend (max_rps %g)", n, o.scaleTTL, o.scaleRPS)
	rs, err := l.startRedis(ctx, "redis-scale")
	if err != nil {
		return err
	}
	defer rs.c.Close()
	apps := makeApps(n)
	appsFile, err := l.writeAppsFile("apps-scale.txt", apps)
	if err != nil {
		return err
	}
	_, fake, err := l.startAddr(ctx, "fake-scale", filepath.Join(l.bin, "fakedingtalk"),
		[]string{"-listen", "127.0.0.1:0", "-apps-file", appsFile, "-log-level", "warn", "-token-ttl", o.scaleTTL.String()})
	if err != nil {
		return err
	}
	s := scaleResult{apps: n, maxRPS: o.scaleRPS, ttl: o.scaleTTL, margin: o.scaleMargin}
	t, err := l.startTokend(ctx, "tokend-scale", tokendSetup{Redis: rs.addr, Fake: fake, Apps: apps, Margin: o.scaleMargin, MaxRPS: o.scaleRPS})
	if err != nil {
		return err
	}
	s.serving = time.Since(t.started)
	expected := time.Duration(float64(n) / o.scaleRPS * float64(time.Second))
	rep.progressf("scale: serving after %s; warming up (about %s at max_rps)", s.serving.Round(time.Millisecond), expected.Round(time.Second))
	if s.warmUp, err = l.waitReady(ctx, t, 3*expected+time.Minute); err != nil {
		return err
	}
	c, err := l.calls(ctx, fake)
	if err != nil {
		return err
	}
	s.warmCalls = c.Total
	s.warmLo, s.warmHi = c.spread(apps)
	iss, err := l.issued(ctx, fake)
	if err != nil {
		return err
	}
	var times []time.Time
	for _, i := range iss {
		times = append(times, i.IssuedAt)
	}
	s.warmRate.rates(times)
	if s.memReady, err = procstat.MemoryOf(t.pid()); err != nil {
		return err
	}

	rep.progressf("scale: ready after %s; measuring idle CPU over %s", s.warmUp.Round(time.Millisecond), o.scaleIdle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second): // let the warm-up's garbage be collected
	}
	before, err := l.calls(ctx, fake)
	if err != nil {
		return err
	}
	if s.idleCPU, err = cpuUse(ctx, t.pid(), o.scaleIdle); err != nil {
		return err
	}
	after, err := l.calls(ctx, fake)
	if err != nil {
		return err
	}
	s.idleWindow = o.scaleIdle
	s.idleCalls = after.Total - before.Total
	if s.memIdle, err = procstat.MemoryOf(t.pid()); err != nil {
		return err
	}
	const scrapes = 3
	for range scrapes {
		m, err := l.scrape(ctx, t)
		if err != nil {
			return err
		}
		s.metrics.ScrapeCPU += m.ScrapeCPU / scrapes
		s.metrics.Bytes, s.metrics.Series, s.metrics.Goroutines, s.metrics.HeapAlloc = m.Bytes, m.Series, m.Goroutines, m.HeapAlloc
	}

	if err := rs.resetStats(ctx); err != nil {
		return err
	}
	cpu0, err := procstat.CPUTime(t.pid())
	if err != nil {
		return err
	}
	limit := o.scaleTTL + 3*expected + time.Minute
	for k := 1; k <= o.scaleCycles; k++ {
		rep.progressf("scale: waiting for refresh cycle %d/%d (every app refreshed once more)", k, o.scaleCycles)
		var cur fakeCalls
		err := pollEvery(ctx, limit, time.Second, func() bool {
			if t.alive() != nil {
				return true
			}
			cur, err = l.calls(ctx, fake)
			lo, _ := cur.spread(apps)
			return err == nil && lo >= k+1
		})
		if err := t.alive(); err != nil {
			return err
		}
		if err != nil {
			return fmt.Errorf("refresh cycle %d did not complete within %s", k, limit)
		}
		lo, hi := cur.spread(apps)
		s.cycles = append(s.cycles, cycle{done: time.Since(t.started), lo: lo - k, hi: hi - k})
	}
	cpu1, err := procstat.CPUTime(t.pid())
	if err != nil {
		return err
	}
	s.refreshCPU = cpu1 - cpu0
	if s.cycleCmds, err = rs.commandStats(ctx); err != nil {
		return err
	}
	if s.memEnd, err = procstat.MemoryOf(t.pid()); err != nil {
		return err
	}
	rep.scale(s)
	warnings(rep, "scale", t)
	return nil
}

// budgetPhase starts replicas sharing one Redis and checks the rate the fake DingTalk sees during
// their warm-up against upstream.max_rps.
func budgetPhase(ctx context.Context, l *lab, o options, rep *report) error {
	defer l.stopAll()
	n := o.budgetApps
	rep.progressf("budget: %d replicas, %d apps, max_rps %g", o.budgetReplicas, n, o.budgetRPS)
	rs, err := l.startRedis(ctx, "redis-budget")
	if err != nil {
		return err
	}
	defer rs.c.Close()
	apps := makeApps(n)
	appsFile, err := l.writeAppsFile("apps-budget.txt", apps)
	if err != nil {
		return err
	}
	_, fake, err := l.startAddr(ctx, "fake-budget", filepath.Join(l.bin, "fakedingtalk"),
		[]string{"-listen", "127.0.0.1:0", "-apps-file", appsFile, "-log-level", "warn"})
	if err != nil {
		return err
	}
	setup := tokendSetup{Redis: rs.addr, Fake: fake, Apps: apps, Margin: 10 * time.Minute, MaxRPS: o.budgetRPS}
	var reps []*tokendProc
	for i := range o.budgetReplicas {
		t, err := l.startTokend(ctx, fmt.Sprintf("tokend-budget-%d", i+1), setup)
		if err != nil {
			return err
		}
		reps = append(reps, t)
	}
	expected := time.Duration(float64(n) / o.budgetRPS * float64(time.Second))
	b := budgetResult{replicas: o.budgetReplicas, apps: n, maxRPS: o.budgetRPS}
	for _, t := range reps {
		d, err := l.waitReady(ctx, t, 3*expected+time.Minute)
		if err != nil {
			return err
		}
		b.warmUp = append(b.warmUp, d)
	}
	c, err := l.calls(ctx, fake)
	if err != nil {
		return err
	}
	b.calls = c.Total
	iss, err := l.issued(ctx, fake)
	if err != nil {
		return err
	}
	var times []time.Time
	for _, i := range iss {
		times = append(times, i.IssuedAt)
	}
	b.rates(times)
	rep.budget(b)
	warnings(rep, "budget", reps...)
	return nil
}

// warnings reports the WARN and ERROR lines the tokend processes of a phase logged.
func warnings(rep *report, phase string, ts ...*tokendProc) {
	total, first := map[string]int{}, map[string]string{}
	for _, t := range ts {
		c, f, err := logWarnings(t.log)
		if err != nil {
			rep.progressf("%s: reading %s: %v", phase, t.log, err)
			continue
		}
		for k, v := range c {
			total[k] += v
			if _, ok := first[k]; !ok {
				first[k] = f[k]
			}
		}
	}
	rep.warnings(total, first)
}

// pollEvery is poll with a chosen interval.
func pollEvery(ctx context.Context, d, every time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// budgetResult is what the budget phase measured.
type budgetResult struct {
	replicas, apps int
	maxRPS         float64
	warmUp         []time.Duration
	calls          int // token calls the fake received
	rate
}

// rate describes when the fake issued values.
type rate struct {
	issues     int // values issued
	span       time.Duration
	mean       float64 // issues per second over the span
	maxAligned int     // most issues in one calendar second (the store's fixed windows)
	maxSliding int     // most issues in any 1 s window
	max10s     int     // most issues in any 10 s window
}

func (b *rate) rates(times []time.Time) {
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	b.issues = len(times)
	if len(times) < 2 {
		return
	}
	b.span = times[len(times)-1].Sub(times[0])
	b.mean = float64(len(times)-1) / b.span.Seconds()
	b.maxSliding = maxInWindow(times, time.Second)
	b.max10s = maxInWindow(times, 10*time.Second)
	perSecond := map[int64]int{}
	for _, t := range times {
		perSecond[t.Unix()]++
	}
	for _, c := range perSecond {
		b.maxAligned = max(b.maxAligned, c)
	}
}

// maxInWindow returns the most of the sorted times that fall in any half-open window [t, t+d).
func maxInWindow(times []time.Time, d time.Duration) int {
	best, j := 0, 0
	for i, t := range times {
		for !times[j].After(t.Add(-d)) {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// within reports whether r respects a budget of limit calls per fixed 1 s window, as the store keeps
// it: at most limit in each window, so at most 2*limit in any 1 s span (it straddles two windows) and
// at most 11*limit in any 10 s span. The fake's arrival times can shift a call into the next window
// when the machine is loaded, so the calendar-second count is shown but not judged.
func (b rate) within(limit float64) bool {
	return float64(b.maxSliding) <= 2*limit && float64(b.max10s) <= 11*limit
}
