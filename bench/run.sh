#!/usr/bin/env bash
# bench/run.sh: tokend's end-to-end benchmarks, in one command (see docs/benchmarks.md).
#
#   bench/run.sh                       # every phase, about 12 minutes
#   bench/run.sh -phases hot,redis     # only the hot-path comparison and the Redis check
#   bench/run.sh -h                    # the driver's flags (rounds, wrk connections, scale sizes...)
#
# It installs wrk and redis-server with apt-get when they are missing, builds tokend, the fake
# DingTalk, the baseline server and the driver, and runs the driver, which starts every process on
# loopback, runs the comparisons and prints Markdown tables (stdout) and progress (stderr). The
# tables are also saved to bench/results/<UTC time>.md (ignored by git). Every process it starts is stopped at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

install_missing() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v redis-server >/dev/null || missing+=(redis-server)
	[ ${#missing[@]} -eq 0 ] && return
	echo "installing ${missing[*]} with apt-get" >&2
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing

bin="$(mktemp -d "${TMPDIR:-/tmp}/tokend-bench-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
echo "building into $bin" >&2
go build -o "$bin/tokend" ./cmd/tokend
go build -o "$bin/fakedingtalk" ./cmd/fakedingtalk
go build -o "$bin/baseline" ./bench/baseline
go build -o "$bin/driver" ./bench/driver

mkdir -p "$root/bench/results"
out="$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ).md"
"$bin/driver" -bin "$bin" "$@" | tee "$out"
if [ -s "$out" ]; then echo "tables saved to $out" >&2; else rm -f "$out"; fi
