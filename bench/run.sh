#!/usr/bin/env bash
# bench/run.sh: tokend's end-to-end benchmarks, in one command (see docs/benchmarks.md).
#
#   bench/run.sh                       # every phase, about 12 minutes
#   bench/run.sh -phases hot,redis     # only the hot-path comparison and the Redis check
#   bench/run.sh -h                    # the driver's flags (rounds, wrk connections, scale sizes...)
#   bench/run.sh -phases instr         # the hot phase's servers under callgrind: instructions per
#                                      # request, a count the machine's noise does not move (5 minutes)
#   bench/run.sh --rev before=b0d87c7 -phases hot
#                                      # also measure tokend built from a git revision, side by side
#
# --rev LABEL=REV (repeatable, before the driver's flags) builds tokend from git revision REV (with
# git archive, leaving the work tree alone) and compares it, labelled LABEL, with the work tree's
# tokend in the same interleaved rounds. The hot phase pins the servers to CPU 1 and wrk to CPU 0
# (-server-cpu, -load-cpu) and stores a CPU profile of the work tree's tokend next to the tables.
#
# It installs wrk and redis-server (and valgrind, for the instr phase) with apt-get when they are
# missing, builds tokend, the fake DingTalk, the baseline server and the driver, and runs the
# driver, which starts every process on loopback, runs the comparisons and prints Markdown tables
# (stdout) and progress (stderr). The tables are also saved to bench/results/<UTC time>.md, the CPU
# profiles next to them (ignored by git). Every process it starts is stopped at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

install_missing() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v redis-server >/dev/null || missing+=(redis-server)
	case " $* " in *instr*) command -v valgrind >/dev/null || missing+=(valgrind) ;; esac
	[ ${#missing[@]} -eq 0 ] && return
	echo "installing ${missing[*]} with apt-get" >&2
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing "$@"

revs=()
while [ $# -gt 0 ] && [ "$1" = "--rev" ]; do
	revs+=("$2")
	shift 2
done

bin="$(mktemp -d "${TMPDIR:-/tmp}/tokend-bench-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT
echo "building into $bin" >&2
go build -o "$bin/tokend" ./cmd/tokend
go build -o "$bin/fakedingtalk" ./cmd/fakedingtalk
go build -o "$bin/baseline" ./bench/baseline
go build -o "$bin/driver" ./bench/driver
tokends=()
if [ ${#revs[@]} -gt 0 ]; then
	tokends+=(-tokend "tokend=$bin/tokend")
	for lr in "${revs[@]}"; do
		label="${lr%%=*}" rev="${lr#*=}"
		src="$bin/src-$label"
		mkdir -p "$src"
		git archive "$rev" | tar -x -C "$src"
		echo "building tokend at $rev as $label" >&2
		(cd "$src" && go build -o "$bin/tokend-$label" ./cmd/tokend)
		tokends+=(-tokend "$label=$bin/tokend-$label")
	done
fi

mkdir -p "$root/bench/results"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench/results/$stamp.md"
"$bin/driver" -bin "$bin" -profile-dir "$root/bench/results" -profile-prefix "$stamp-" "${tokends[@]}" "$@" | tee "$out"
if [ -s "$out" ]; then echo "tables saved to $out" >&2; else rm -f "$out"; fi
