package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run measured.
type wrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Requests int64
	Non2xx   int64
	Errors   string // wrk's "Socket errors" line, "" when there were none
}

// load describes a wrk run.
type load struct {
	Threads, Conns int
	Duration       time.Duration
	Key            string // sent as a bearer key (to both servers, so requests are the same size)
	CPU            string // when set, wrk runs pinned to these CPUs (taskset -c)
	// Pace, when set, makes each connection wait this long (whole milliseconds) after each response
	// before its next request (a wrk script's delay()): the offered rate is then about
	// Conns/(Pace+latency) whatever the server's speed, so servers are compared at the same rate
	// rather than each at the rate its own speed allows (wrk's closed loop).
	Pace time.Duration
}

// runWrk runs wrk against url and parses its report.
func runWrk(ctx context.Context, ld load, url string) (wrkResult, error) {
	args := []string{
		"-t", strconv.Itoa(ld.Threads), "-c", strconv.Itoa(ld.Conns),
		"-d", strconv.Itoa(int(ld.Duration.Seconds())) + "s", "--timeout", "5s", "--latency",
	}
	if ld.Key != "" {
		args = append(args, "-H", "Authorization: Bearer "+ld.Key)
	}
	if ld.Pace > 0 {
		f, err := os.CreateTemp("", "wrk-pace-*.lua")
		if err != nil {
			return wrkResult{}, err
		}
		defer os.Remove(f.Name())
		_, err = fmt.Fprintf(f, "function delay()\n  return %d\nend\n", ld.Pace.Milliseconds())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return wrkResult{}, err
		}
		args = append(args, "-s", f.Name())
	}
	args = append(args, url)
	name := "wrk"
	if ld.CPU != "" {
		name, args = "taskset", append([]string{"-c", ld.CPU, "wrk"}, args...)
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return r, nil
}

// parseWrk reads the figures of a wrk --latency report.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("requests/sec %q: %w", f[1], err)
			}
			r.RPS, haveRPS = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.ParseInt(f[0], 10, 64)
		case len(f) == 5 && strings.Join(f[:4], " ") == "Non-2xx or 3xx responses:":
			r.Non2xx, _ = strconv.ParseInt(f[4], 10, 64)
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			r.Errors = strings.Join(f[2:], " ")
		}
	}
	if !haveRPS || !have50 || !have99 {
		return r, fmt.Errorf("no Requests/sec or latency percentiles in the report")
	}
	return r, nil
}

// parseWrkDuration parses wrk's "812.00us", "1.81ms", "1.02s", "1.50m".
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		d      time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("latency %q: %w", s, err)
			}
			return time.Duration(f * float64(u.d)), nil
		}
	}
	return 0, fmt.Errorf("latency %q: unknown unit", s)
}

// median returns the median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
