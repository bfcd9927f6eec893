#!/usr/bin/env bash
# bench/isv.sh: one third-party (ISV) suite with 10 000 authorized corps served lazily by 2 tokend
# replicas sharing a real Redis, against the fake DingTalk: time at the upstream budget, upstream
# calls per corp, RSS, idle CPU and /metrics scrape cost against 10 plain apps (see
# docs/benchmarks.md, "Third-party apps at 10 000 corps").
#
#   bench/isv.sh                                  # 10 000 corps, upstream.max_rps 400, 64 connections
#   bench/isv.sh -corps 2000 -max-rps 450         # the flags of bench/isvbench
#
# Needs redis-server and taskset (two CPUs: the replicas on CPU 0; the load, Redis and the fake on CPU 1).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v taskset >/dev/null || { echo "taskset is required (util-linux)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required" >&2; exit 1; }

bin="$(mktemp -d "${TMPDIR:-/tmp}/tokend-isvbench.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/tokend" ./cmd/tokend
go build -o "$bin/fakedingtalk" ./cmd/fakedingtalk
go build -o "$bin/isvbench" ./bench/isvbench
taskset -c 1 "$bin/isvbench" -bin "$bin" "$@"
