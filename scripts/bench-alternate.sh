#!/usr/bin/env bash
# Runs pipeline bench binaries alternately, ROUNDS times each, and prints one
# line per run and the medians: on a shared VM the same binary varies by 1.5x
# within an hour, so builds are only compared within one alternated sitting.
#
#   CARGO_TARGET_DIR=... cargo bench --workspace --bench pipeline --no-run
#   cp target/release/deps/pipeline-<hash> /tmp/base   # and so on per build
#   scripts/bench-alternate.sh 8 /tmp/base /tmp/head
#
# PIPELINE_CUSTOMERS (default 1000000) and PIPELINE_EVENTS (default 300000)
# pass through to the bench. The bench first gives every customer a state;
# PIPELINE_PREPARED (default $TMPDIR/cohort-pipeline-prepared) keeps that
# store, so only the first run pays for it.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 ROUNDS BINARY [BINARY...]" >&2
  exit 2
fi
rounds=$1
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
  for bin in "$@"; do
    run=$(PIPELINE_CUSTOMERS=${PIPELINE_CUSTOMERS:-1000000} PIPELINE_EVENTS=${PIPELINE_EVENTS:-300000} \
      PIPELINE_PREPARED=${PIPELINE_PREPARED:-${TMPDIR:-/tmp}/cohort-pipeline-prepared} "$bin" --bench 2>&1)
    wall=$(grep -oE '= [0-9]+ events/s on one thread' <<<"$run" | grep -oE '[0-9]+')
    cpu=$(grep -oE 'CPU per event [0-9.]+ us on the proc' <<<"$run" | grep -oE '[0-9.]+')
    all=$(grep -oE '[0-9.]+ us in all threads' <<<"$run" | grep -oE '^[0-9.]+')
    echo "$bin events/s $wall, CPU per event $cpu us (processing thread), $all us (all threads)"
    echo "$bin $wall $cpu" >>"$out"
  done
done
median() {
  sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for bin in "$@"; do
  wall=$(awk -v b="$bin" '$1 == b { print $2 }' "$out" | median)
  cpu=$(awk -v b="$bin" '$1 == b { print $3 }' "$out" | median)
  echo "$bin: median $wall events/s, $cpu us CPU per event, over $rounds runs"
done
