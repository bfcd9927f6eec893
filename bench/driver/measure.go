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
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on every Linux ABI.
const userHZ = 100

// cpuTime returns the user+system CPU time pid has used so far, all threads included.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces: count fields after it.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// memory is a process's resident memory, from /proc/PID/status.
type memory struct {
	RSS, Peak int64 // bytes: VmRSS and VmHWM
}

func memoryOf(pid int) (memory, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.RSS = v << 10
		case "VmHWM:":
			m.Peak = v << 10
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// cpuUse measures pid's CPU use over d, as a fraction of one core.
func cpuUse(ctx context.Context, pid int, d time.Duration) (float64, error) {
	t0, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	t1, err := cpuTime(pid)
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
	c0, err := cpuTime(t.pid())
	if err != nil {
		return s, err
	}
	code, body, err := l.get(ctx, "http://"+t.ops+"/metrics", "")
	if err != nil || code != 200 {
		return s, fmt.Errorf("metrics: status %d, err %v", code, err)
	}
	c1, err := cpuTime(t.pid())
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
