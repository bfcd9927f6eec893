#!/usr/bin/env bash
# Security checks, run by CI after .ci/run (see SECURITY.md):
#   - go mod verify: the module cache holds exactly what go.sum names;
#   - go mod tidy -diff: go.mod and go.sum are tidy (it changes nothing, it only reports);
#   - staticcheck, at a pinned version, on every package: no finding;
#   - every fuzz target for FUZZTIME (default 10s) each, starting from its seed corpus in testdata.
#     A failing input is written to the package's testdata/fuzz/<Target>/ and fails the run: commit it
#     with the fix, as a regression test.
# govulncheck needs vuln.go.dev, which our build machines cannot reach: with GOVULNCHECK=1 (in an
# operator's CI that can) it runs too.
#
# Environment: FUZZTIME (a go test -fuzztime value), TOOLS_BIN (where staticcheck is installed;
# default: $(go env GOPATH)/bin, outside the repository), GOVULNCHECK=1.
set -euo pipefail
cd "$(dirname "$0")/.."

# staticcheck 2026.2.2, the newest release (checked on proxy.golang.org); it requires Go 1.26.
STATICCHECK_VERSION=v0.8.2
FUZZTIME="${FUZZTIME:-10s}"
TOOLS_BIN="${TOOLS_BIN:-$(go env GOPATH)/bin}"

# The fuzz targets, one "package target" per line. A new target must be added here.
FUZZ_TARGETS="
./internal/config FuzzParse
./internal/signature FuzzNormalizeURL
./internal/httpapi FuzzHandler
./internal/dingtalk FuzzParse
./internal/dingtalk FuzzScrub
./internal/proxyrule FuzzClean
./internal/proxyrule FuzzParse
./internal/httpapi FuzzProxyHandler
./internal/httpapi FuzzFlows
./internal/httpapi FuzzRouteMatch
./internal/callback FuzzOpen
./internal/suite FuzzReceive
./dingtalkapi FuzzParse
./internal/store FuzzDecodeEvent
"

step() { printf '\n== %s\n' "$*"; }

step "go version: $(go version)"

step "go mod verify"
go mod verify

step "go mod tidy -diff"
if ! go mod tidy -diff; then
	echo "go.mod/go.sum are not tidy: run go mod tidy and commit the result" >&2
	exit 1
fi

step "staticcheck $STATICCHECK_VERSION"
if ! "$TOOLS_BIN/staticcheck" -version 2>/dev/null | grep -q "($STATICCHECK_VERSION)"; then
	GOBIN="$TOOLS_BIN" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
"$TOOLS_BIN/staticcheck" -version
"$TOOLS_BIN/staticcheck" ./...

# fuzz PKG TARGET runs one target for FUZZTIME. Go 1.26's fuzz coordinator can report a bare
# "context deadline exceeded" when -fuzztime ends while a worker is mid-input (golang/go#75804, fixed
# in Go 1.27): no input is written then. Such a run is repeated once; any other failure, a failing
# input written to testdata/fuzz, or the same race twice fails the step.
fuzz() {
	local pkg=$1 target=$2 out
	for attempt in 1 2; do
		out=$(mktemp)
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$out"; then
			rm -f "$out"
			return 0
		fi
		if grep -q 'Failing input written to' "$out" || ! grep -q '^    context deadline exceeded$' "$out" || [ "$attempt" = 2 ]; then
			rm -f "$out"
			return 1
		fi
		rm -f "$out"
		echo "$target: the coordinator's end-of-fuzztime race (golang/go#75804), no input written: running it again"
	done
}

step "fuzzing, $FUZZTIME per target"
while read -r pkg target; do
	[ -n "$pkg" ] || continue
	step "fuzz $target in $pkg"
	fuzz "$pkg" "$target"
done <<<"$FUZZ_TARGETS"

if [ "${GOVULNCHECK:-0}" = 1 ]; then
	step "govulncheck"
	go run golang.org/x/vuln/cmd/govulncheck@latest ./...
fi

step "security checks passed"
