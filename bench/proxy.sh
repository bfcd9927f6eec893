#!/usr/bin/env bash
# bench/proxy.sh: tokend's proxy against a bare httputil.ReverseProxy forwarding to the same local
# upstream, CPU per request over interleaved rounds, then resident memory under concurrent large
# uploads (see docs/benchmarks.md, "Proxy").
#
#   bench/proxy.sh                              # 6 rounds of 8 s at 400 req/s per server, 50 uploads of 20 MiB
#   bench/proxy.sh -rounds 10 -duration 10s     # the flags of bench/proxybench's run command
#
# Needs taskset (two CPUs: the server under test on CPU 0, the upstream and the load on CPU 1).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v taskset >/dev/null || { echo "taskset is required (util-linux)" >&2; exit 1; }

bin="$(mktemp -d "${TMPDIR:-/tmp}/tokend-proxybench.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/tokend" ./cmd/tokend
go build -o "$bin/proxybench" ./bench/proxybench
"$bin/proxybench" run -bin "$bin" "$@"
