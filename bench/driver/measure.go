package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/bench/procstat"
)

// cpuUse measures pid's CPU use over d, as a fraction of one core.
func cpuUse(ctx context.Context, pid int, d time.Duration) (float64, error) {
	t0, err := procstat.CPUTime(pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	t1, err := procstat.CPUTime(pid)
	if err != nil {
		return 0, err
	}
	return float64(t1-t0) / float64(time.Since(start)), nil
}

// commandStats returns Redis's calls per command since the last CONFIG RESETSTAT, leaving out the
// commands the driver itself sends to read and reset them.
func (r *redisServer) commandStats(ctx context.Context) (map[string]int64, error) {
	info, err := r.c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	return parseCommandStats(info)
}

// parseCommandStats reads the calls of each command from INFO commandstats, without INFO and
// CONFIG RESETSTAT.
func parseCommandStats(info string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		if name == "info" || name == "config|resetstat" {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("commandstats %q: %w", line, err)
				}
				out[name] = n
			}
		}
	}
	return out, nil
}

func (r *redisServer) resetStats(ctx context.Context) error {
	return r.c.ConfigResetStat(ctx).Err()
}

// formatStats writes "cmd=N cmd=N" in name order, "none" when empty.
func formatStats(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", n, m[n])
	}
	return b.String()
}

func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// logWarnings counts the WARN and ERROR lines of a tokend JSON log by message, with the first error
// text seen for each, so that a table can say what went wrong during a phase (a store marked
// unavailable under load explains extra upstream calls, for instance).
func logWarnings(path string) (map[string]int, map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	counts, firstErr := map[string]int{}, map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Err   string `json:"err"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
			continue
		}
		counts[rec.Msg]++
		if _, ok := firstErr[rec.Msg]; !ok {
			firstErr[rec.Msg] = rec.Err
		}
	}
	return counts, firstErr, nil
}

// metricsSample is what the scale phase reads from tokend's /metrics.
type metricsSample struct {
	Bytes      int
	Series     int
	Goroutines float64
	HeapAlloc  float64
	ScrapeCPU  time.Duration
}

// scrape fetches /metrics once, measuring the CPU time tokend spent answering it.
func (l *lab) scrape(ctx context.Context, t *tokendProc) (metricsSample, error) {
	var s metricsSample
	c0, err := procstat.CPUTime(t.pid())
	if err != nil {
		return s, err
	}
	code, body, err := l.get(ctx, "http://"+t.ops+"/metrics", "")
	if err != nil || code != 200 {
		return s, fmt.Errorf("metrics: status %d, err %v", code, err)
	}
	c1, err := procstat.CPUTime(t.pid())
	if err != nil {
		return s, err
	}
	s.ScrapeCPU, s.Bytes = c1-c0, len(body)
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s.Series++
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			s.Goroutines = v
		case "go_memstats_heap_alloc_bytes":
			s.HeapAlloc = v
		}
	}
	return s, nil
}
