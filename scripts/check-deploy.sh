#!/usr/bin/env bash
# Checks the deployment artifacts without Docker or a cluster (CI runs it):
#   - promtool: the alert rules are valid and their unit tests pass; the compose Prometheus config is valid;
#   - go test ./deploy: Dockerfile, .dockerignore, docker-compose.yml, deploy/compose, deploy/kubernetes,
#     the Grafana dashboard and the rules parse, carry the promised hardening and agree with each other and
#     with the metrics contract;
#   - when kubectl is on PATH: kustomize renders deploy/kubernetes;
#   - when `docker compose` is available: Compose accepts docker-compose.yml.
# promtool comes from Debian's prometheus package, installed here when missing (needs root and apt-get).
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

ensure_promtool() {
	if command -v promtool >/dev/null 2>&1; then
		return
	fi
	if [ -x /usr/bin/promtool ]; then
		PATH="/usr/bin:$PATH"
		return
	fi
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "check-deploy: promtool not found; install Debian's prometheus package (apt-get install prometheus)" >&2
		exit 1
	fi
	step "installing promtool (Debian package prometheus)"
	# The package's postinst would start a Prometheus server on :9090; we only want promtool. A policy-rc.d
	# that denies every start keeps it stopped (only added if the machine has none, and removed after).
	local policy=/usr/sbin/policy-rc.d added_policy=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		added_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	} || rc=$?
	if [ -n "$added_policy" ]; then
		rm -f "$policy"
	fi
	if [ "$rc" -ne 0 ]; then
		echo "check-deploy: installing prometheus failed ($rc)" >&2
		exit "$rc"
	fi
	if ! command -v promtool >/dev/null 2>&1; then
		PATH="/usr/bin:$PATH"
	fi
}

ensure_promtool
promtool --version 2>&1 | head -n 1

step "promtool check rules"
promtool check rules deploy/prometheus/alerts.yaml

step "promtool test rules"
promtool test rules deploy/prometheus/alerts_test.yaml

step "promtool check config (compose)"
# --syntax-only: the rule_files glob names the path inside the Prometheus container.
promtool check config --syntax-only deploy/compose/prometheus.yml
# deploy/prometheus/kubernetes-scrape-config.yaml uses kubernetes_sd_configs, which Debian's promtool is
# built without; go test below parses it instead.

step "promtool check metrics on a live /metrics (tokend -dev)"
live=$(mktemp -d)
go build -o "$live/tokend" ./cmd/tokend
"$live/tokend" -dev -listen 127.0.0.1:0 -ops-listen 127.0.0.1:0 >"$live/out" 2>"$live/err" &
live_pid=$!
ops=""
for _ in $(seq 100); do
	ops=$(grep -o 'ops_listen=[0-9.:]*' "$live/err" | head -n 1 | cut -d= -f2 || true)
	[ -n "$ops" ] && break
	sleep 0.1
done
status=0
curl -sf "http://$ops/metrics" >"$live/metrics" || status=$?
kill "$live_pid"
wait "$live_pid" || true
if [ "$status" -ne 0 ] || ! grep -q '^tokend_build_info' "$live/metrics"; then
	echo "check-deploy: could not scrape tokend's /metrics" >&2
	exit 1
fi
promtool check metrics <"$live/metrics"
echo "$(grep -c '^tokend_' "$live/metrics") tokend series pass promtool's lint"
rm -rf "$live"

step "go test ./deploy"
go test -count=1 -race ./deploy/

step "kustomize deploy/kubernetes"
if command -v kubectl >/dev/null 2>&1; then
	kubectl kustomize deploy/kubernetes >/dev/null
	echo "rendered"
else
	echo "skipped: kubectl not installed"
fi

step "docker compose config"
if docker compose version >/dev/null 2>&1; then
	docker compose -f docker-compose.yml config --quiet
	echo "valid"
else
	echo "skipped: docker compose not installed"
fi

step "check-deploy: all checks passed"
