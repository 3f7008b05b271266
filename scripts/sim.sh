#!/usr/bin/env bash
# `make sim`: every scenario world (fixed seeds) x every baseline policy through
# the closed-loop simulator; reports under out/sim/, the policies x scenarios
# table into bench/results/sim.md (and, for a full default run, the sim:matrix
# section of BENCHMARKS.md).
# Env: STOPWISE (the CLI), PY (python), SIM_N (requests per world, default 20000;
#      stationary gets 3x, abrupt_drift 1.5x, the production-like prod_* 5x (100,000 by
#      default: >= 12 windows of 1,000 requests for the smallest context, 12% of traffic),
#      for enough windows), SIM_OUT (default out/sim),
#      SIM_SCENARIOS (space-separated subset), SIM_JOBS (scenarios run in parallel, default 2),
#      SIM_TABLE (where the table goes, default bench/results/sim.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="${VENV_BIN:-$( [ -x .venv/bin/stopwise ] && echo .venv/bin || dirname "$(command -v stopwise || echo /tmp/venv/bin/stopwise)")}"
STOPWISE="${STOPWISE:-$VENV_BIN/stopwise}"
PY="${PY:-$VENV_BIN/python}"
N="${SIM_N:-20000}"
JOBS="${SIM_JOBS:-2}"
OUT="${SIM_OUT:-out/sim}"
SCENARIOS="${SIM_SCENARIOS:-prod_full prod_30 prod_5 prod_0 prod_drift stationary abrupt_drift gradual_drift cold_start mix_shift sparse_feedback delayed_feedback noisy_labels digits}"
POLICIES=(--policy none --policy static-0.95 --policy offline --policy naive --policy reference)
export STOPWISE_LOGGING__LEVEL="${STOPWISE_LOGGING__LEVEL:-WARNING}"

mkdir -p "$OUT/worlds"
start=$(date +%s)
seed=1

run_one() {   # scenario -> world, all baselines, report
  local sc="$1" n="$N"
  case "$sc" in
    stationary) n=$(( N * 3 )) ;;       # >= 20 windows per context
    abrupt_drift) n=$(( N * 3 / 2 )) ;;  # enough post-drift requests of the drifting context
    prod_*) n=$(( N * 5 )) ;;            # six contexts (12-20% each): >= 10 windows per context
  esac
  local world="$OUT/worlds/$sc.jsonl"
  {
    echo "== $sc (n=$n, seed=$seed)"
    "$STOPWISE" worlds generate --scenario "$sc" --seed "$seed" --n "$n" --out "$world"
    "$STOPWISE" simulate --world "$world" "${POLICIES[@]}" --window 1000 --publish-delay 1.0 --out "$OUT/$sc"
    "$STOPWISE" report "$OUT/$sc"
  } > "$OUT/$sc.log" 2>&1 || { echo "FAILED: $sc (see $OUT/$sc.log)"; cat "$OUT/$sc.log"; return 1; }
  cat "$OUT/$sc.log"
}
export -f run_one
export N OUT STOPWISE seed
export POLICIES_STR="${POLICIES[*]}"

failed=0
printf '%s\n' $SCENARIOS | xargs -P "$JOBS" -I{} bash -c 'POLICIES=($POLICIES_STR); run_one "$@"' _ {} || failed=1
elapsed=$(( $(date +%s) - start ))
"$PY" -m stopwise.sim.matrix "$OUT" --out "${SIM_TABLE:-bench/results/sim.md}" \
  --command "make sim  (scripts/sim.sh: SIM_N=$N, stationary 3*SIM_N, abrupt_drift 1.5*SIM_N, prod_* 5*SIM_N, seed 1, --window 1000 --publish-delay 1.0; took ${elapsed}s)"
if [ -z "${SIM_SCENARIOS:-}" ] && [ -z "${SIM_TABLE:-}" ]; then   # a full default run also refreshes BENCHMARKS.md
  "$PY" -m stopwise.sim.matrix "$OUT" --out BENCHMARKS.md \
    --command "make sim  (scripts/sim.sh: SIM_N=$N, stationary 3*SIM_N, abrupt_drift 1.5*SIM_N, prod_* 5*SIM_N, seed 1, --window 1000 --publish-delay 1.0; took ${elapsed}s)" > /dev/null
fi
echo "reports: $OUT/<scenario>/report.md; table: ${SIM_TABLE:-bench/results/sim.md} (${elapsed}s)"
exit $failed
