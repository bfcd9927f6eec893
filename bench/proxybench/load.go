package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

// loadResult is what one load run measured; the load subcommand prints it as JSON.
type loadResult struct {
	Requests int64         `json:"requests"`
	Non2xx   int64         `json:"non2xx"`
	Errors   int64         `json:"errors"`
	Late     int64         `json:"late"` // requests that could not start on time (every connection busy)
	P99      time.Duration `json:"p99"`
	RPS      float64       `json:"rps"`
}

// serveLoad sends GET requests to -url at a fixed rate (open loop: a request is due every 1/rate s,
// whatever the answers' latency) over -conns keep-alive connections for -duration. A fixed rate below
// proxy.max_rps keeps every request inside the shared egress budget, which a closed-loop tool such
// as wrk would exhaust at once (tokend would then mostly answer 429, cheaply).
func serveLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	url := fs.String("url", "", "URL to GET")
	key := fs.String("key", "", "bearer key")
	rate := fs.Int("rate", 400, "requests per second")
	conns := fs.Int("conns", 32, "connections")
	d := fs.Duration("duration", 8*time.Second, "how long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}, Timeout: 10 * time.Second}
	due := make(chan time.Time, *conns)
	var mu sync.Mutex
	var lat []time.Duration
	var r loadResult
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			for at := range due {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				req.Header.Set("Authorization", "Bearer "+*key)
				resp, err := hc.Do(req)
				took := time.Since(at)
				mu.Lock()
				r.Requests++
				switch {
				case err != nil:
					r.Errors++
				default:
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						r.Non2xx++
					}
				}
				lat = append(lat, took)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(*rate)
	tick := time.NewTicker(interval)
	for now := range tick.C {
		if now.Sub(start) >= *d {
			break
		}
		select {
		case due <- now:
		default:
			r.Late++
		}
	}
	tick.Stop()
	close(due)
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		r.P99 = lat[len(lat)*99/100]
	}
	r.RPS = float64(r.Requests) / time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(r)
}

// runLoad runs the load subcommand pinned to CPU 1 and returns its result.
func runLoad(ctx context.Context, me, url, key string, rate, conns int, d time.Duration) (loadResult, error) {
	out, err := execPinned(ctx, "1", me, "load", "-url", url, "-key", key, "-rate", fmt.Sprint(rate), "-conns", fmt.Sprint(conns), "-duration", d.String())
	if err != nil {
		return loadResult{}, err
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("load output %q: %w", out, err)
	}
	return r, nil
}
