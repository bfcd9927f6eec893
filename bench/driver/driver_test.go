package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const wrkReport = `Running 10s test @ http://127.0.0.1:41234/v1/apps/crm/access_token
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.41ms    5.12ms 104.27ms   95.00%
    Req/Sec    10.68k     3.82k   25.75k    68.35%
  Latency Distribution
     50%  812.00us
     75%    1.90ms
     90%    3.10ms
     99%    1.02s
  213456 requests in 10.00s, 47.61MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
  Non-2xx or 3xx responses: 7
Requests/sec:  21345.60
Transfer/sec:      4.76MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{RPS: 21345.60, P50: 812 * time.Microsecond, P99: 1020 * time.Millisecond, Requests: 213456, Non2xx: 7,
		Errors: "connect 0, read 2, write 0, timeout 0"}
	if r != want {
		t.Fatalf("parseWrk = %+v, want %+v", r, want)
	}
	if _, err := parseWrk("Running 10s test @ http://x/\n  0 requests in 10.00s\n"); err == nil {
		t.Fatal("a report without figures parsed")
	}
}

func TestParseWrkDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"812.00us", 812 * time.Microsecond},
		{"1.81ms", 1810 * time.Microsecond},
		{"2.00s", 2 * time.Second},
		{"1.50m", 90 * time.Second},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseWrkDuration(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("parseWrkDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
	if _, err := parseWrkDuration("3 parsecs"); err == nil {
		t.Fatal("an unknown unit parsed")
	}
}

func TestRates(t *testing.T) {
	base := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	var times []time.Time
	// 10 calls at the very end of one second and 10 at the start of the next: each calendar second
	// holds 10, a 1 s window 20.
	for i := range 10 {
		times = append(times, base.Add(900*time.Millisecond+time.Duration(i)*time.Millisecond))
		times = append(times, base.Add(time.Second+time.Duration(i)*time.Millisecond))
	}
	times = append(times, base.Add(30*time.Second))
	var r rate
	r.rates(times)
	if r.issues != 21 || r.maxAligned != 10 || r.maxSliding != 20 || r.max10s != 20 {
		t.Fatalf("rates = %+v; want 21 issues, 10 per calendar second, 20 in 1 s and in 10 s", r)
	}
	if !r.within(10) {
		t.Fatal("two full fixed windows back to back judged over a budget of 10/s")
	}
	if r.within(9) {
		t.Fatal("20 calls in 1 s judged within a budget of 9/s")
	}
}

func TestMaxInWindowIsHalfOpen(t *testing.T) {
	base := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	times := []time.Time{base, base.Add(time.Second), base.Add(2 * time.Second)}
	if got := maxInWindow(times, time.Second); got != 1 {
		t.Fatalf("calls exactly 1 s apart: %d in a 1 s window, want 1", got)
	}
	if got := maxInWindow(times, time.Second+time.Nanosecond); got != 2 {
		t.Fatalf("%d in a window a nanosecond longer, want 2", got)
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_ping:calls=4,usec=12,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=1,usec=50\r\ncmdstat_config|resetstat:calls=1,usec=5\r\ncmdstat_hmget:calls=30000,usec=9\r\n"
	got, err := parseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["ping"] != 4 || got["hmget"] != 30000 {
		t.Fatalf("parseCommandStats = %v, want ping=4 hmget=30000 only", got)
	}
	if formatStats(got) != "hmget=30000 ping=4" || formatStats(nil) != "none" || total(got) != 30004 {
		t.Fatalf("formatStats = %q, total = %d", formatStats(got), total(got))
	}
}

func TestLogWarnings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokend.log")
	log := `{"time":"x","level":"WARN","msg":"store unavailable: serving from memory and refreshing alone","err":"redis spend upstream: context deadline exceeded"}
{"time":"x","level":"INFO","msg":"store available again"}
not json
{"time":"x","level":"WARN","msg":"store unavailable: serving from memory and refreshing alone","err":"later"}
{"time":"x","level":"ERROR","msg":"refresh failed","err":""}
`
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	counts, first, err := logWarnings(path)
	if err != nil {
		t.Fatal(err)
	}
	const su = "store unavailable: serving from memory and refreshing alone"
	if len(counts) != 2 || counts[su] != 2 || counts["refresh failed"] != 1 || first[su] != "redis spend upstream: context deadline exceeded" {
		t.Fatalf("logWarnings = %v, %v", counts, first)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Fatalf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestConfigHasNoKeyOnlyItsHash(t *testing.T) {
	cfg := tokendSetup{Redis: "127.0.0.1:1", Fake: "127.0.0.1:2", Apps: makeApps(1), Margin: time.Minute, MaxRPS: 50}.config("127.0.0.1:3", "127.0.0.1:4")
	if strings.Contains(cfg, benchKey) {
		t.Fatal("the config holds the client key itself")
	}
	for _, want := range []string{"listen: 127.0.0.1:3", "ops_listen: 127.0.0.1:4", "max_rps: 50", "margin: 1m0s", "name: crm", "key_sha256: "} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("config lacks %q:\n%s", want, cfg)
		}
	}
}

func TestConfigClientsLevelAndPprof(t *testing.T) {
	cfg := tokendSetup{Redis: "127.0.0.1:1", Fake: "127.0.0.1:2", Apps: makeApps(1), Margin: time.Minute, MaxRPS: 50,
		LogLevel: "debug", Clients: 100, Pprof: true}.config("127.0.0.1:3", "127.0.0.1:4")
	if n := strings.Count(cfg, "key_sha256: "); n != 100 {
		t.Fatalf("%d clients configured, want 100", n)
	}
	lines := strings.Split(strings.TrimSpace(cfg), "\n")
	if !strings.Contains(lines[len(lines)-1], "name: bench") {
		t.Fatalf("the benchmark's client is not last: %s", lines[len(lines)-1])
	}
	for _, want := range []string{"level: debug", "debug: {pprof: true}"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("config lacks %q", want)
		}
	}
}

func TestTokendBins(t *testing.T) {
	var b tokendBins
	for _, v := range []string{"before=/x/tokend-before", "/y/tokend"} {
		if err := b.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set("=/z"); err == nil {
		t.Fatal("an empty label was accepted")
	}
	if b.String() != "before=/x/tokend-before,tokend=/y/tokend" {
		t.Fatalf("tokendBins = %s", b.String())
	}
}

func TestCallgrindTotalAndGCs(t *testing.T) {
	dir := t.TempDir()
	dump := filepath.Join(dir, "callgrind.out.123.1")
	if err := os.WriteFile(dump, []byte("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=main\n16 3\nsummary: 0\n\n\ntotals: 383787108\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := callgrindTotal(dump); err != nil || n != 383787108 {
		t.Errorf("callgrindTotal = %d, %v; want 383787108", n, err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("events: Ir\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := callgrindTotal(empty); err == nil {
		t.Error("callgrindTotal of a dump without a summary: no error")
	}
	log := filepath.Join(dir, "server.log")
	lines := "==9929== Callgrind, a call-graph generating cache profiler\nlistening on 127.0.0.1:1\n" +
		"gc 1 @0.051s 1%: 0.021+1.1+0.009 ms clock, 3->3->0 MB, 4 MB goal, 1 P\n" +
		`{"level":"INFO","msg":"gc settings"}` + "\ngc 2 @0.082s 1%: 0.023+1.0+0.003 ms clock, 3->3->0 MB, 4 MB goal, 1 P\n"
	if err := os.WriteFile(log, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := countGCs(log); err != nil || n != 2 {
		t.Errorf("countGCs = %d, %v; want 2", n, err)
	}
	if r := (instrRun{requests: 4, instr: 180000}); r.perReq() != 45000 {
		t.Errorf("perReq = %v", r.perReq())
	}
}
