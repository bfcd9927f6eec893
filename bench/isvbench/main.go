// Command isvbench measures tokend with one third-party (ISV) suite and many authorized corps
// (bench/isv.sh runs it; results in docs/benchmarks.md, "Third-party apps at 10 000 corps").
//
//	isvbench -bin DIR [-corps 10000] [-max-rps 400] [-conns 64] [-idle 20s] [-scrapes 50]
//
// It starts a redis-server on a free port, the fake DingTalk from DIR (one suite, -corps authorized
// corps, 10 plain apps for the comparison), and 2 tokend replicas sharing the Redis with
// upstream.max_rps (shared by the replicas). The replicas are pinned to CPU 0 with taskset; this
// program, the load, Redis and the fake run on the CPUs it was started on (bench/isv.sh: CPU 1).
// After a suite ticket is given through PUT /v1/apps/{app}/suite_ticket, a client requests each
// corp's token once, corp i from replica i%2, over -conns connections, and the program reports the
// time, the fake's token calls per corp, each replica's RSS, the replicas' CPU over -idle of no load
// (utime+stime from /proc/PID/stat) and the cost of a /metrics scrape (bytes, server CPU) against one
// tokend configured with 10 plain apps. Markdown goes to stdout, progress to stderr. Every process it
// starts is stopped when it returns (and killed if it dies).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "isvbench:", err)
		os.Exit(1)
	}
}
