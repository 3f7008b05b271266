#!/usr/bin/env bash
# `make bench`: every benchmark under bench/, each printing a markdown table of
# ratios against a baseline measured in the same run; results land in
# bench/results/*.md (BENCHMARKS.md summarises them). Benchmarks that need
# Kafka use $STOPWISE_BOOTSTRAP, else a local broker started here and stopped
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV_BIN:-.venv/bin}"
PY="$BIN/python"
started=""
if [[ -z "${STOPWISE_BOOTSTRAP:-}" ]]; then
  dir="$PWD/out/bench/broker"
  STOPWISE_BOOTSTRAP=$("$BIN/stopwise" broker start --dir "$dir")
  started="$dir"
fi
export STOPWISE_BOOTSTRAP
trap '[[ -n "$started" ]] && "$BIN/stopwise" broker stop --dir "$started" >/dev/null 2>&1 || true' EXIT

"$PY" bench/bench_decode.py --out bench/results/decode.md
"$PY" bench/bench_core.py --out bench/results/core.md
"$PY" bench/bench_sim.py --write
"$PY" bench/bench_ops.py --bootstrap "$STOPWISE_BOOTSTRAP" --write
"$PY" bench/bench_clients.py
"$PY" bench/bench_stages.py --out bench/results/stages_table.md
"$PY" bench/bench_daemon.py --out bench/results/daemon_table.md
