#!/bin/bash
# How late a spinning step ends with the CPU oversubscribed.
#
#   scripts/deadline-under-load.sh [RUNS] [BUSY] [DEADLINE_MS]
#
# Starts BUSY (default 4) busy processes, then runs a one-step runbook whose
# step spins forever under a DEADLINE_MS (default 1000) deadline RUNS
# (default 20) times, and prints how long the step took against its
# deadline (the step's own wall time from the report, and the whole
# process's). Uses `target/debug/runbook` (or `$RUNBOOK`); build it first.
set -euo pipefail
runs=${1:-20}
busy=${2:-4}
deadline=${3:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${RUNBOOK:-$root/target/debug/runbook}
[ -x "$bin" ] || { echo "no $bin: build it with \`cargo build\`" >&2; exit 2; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/plugins/spin-forever"
sed "s/^timeout_ms = .*/timeout_ms = $deadline/" "$root/plugins/testing/spin-forever/plugin.toml" \
  > "$work/plugins/spin-forever/plugin.toml"
cat > "$work/rb.md" <<RB
---
runbook_id: RB-SPIN
title: spin
service: none
severity_scope: TEST
tags: []
first_action_step: spin
steps:
  - id: spin
    plugin: spin-forever
    on: { contained: resolved, escaped: escalated }
---
RB
for _ in $(seq "$busy"); do sh -c 'while :; do :; done' & pids+=($!); done
export RUNBOOK_COMPONENTS="$root/target/plugins/wasm32-wasip2/release"
export RUNBOOK_STATE_DIR="$work/state"
for i in $(seq "$runs"); do
  start=$(date +%s%N)
  "$bin" run "$work/rb.md" --sim "$root/tests/fixtures/scenarios/sandbox.toml" \
    --plugins "$work/plugins" --cache-dir "$work/cache" --json > "$work/out-$i.json" || true
  echo $(( ($(date +%s%N) - start) / 1000000 )) > "$work/process-$i.ms"
done
python3 - "$work" "$runs" "$deadline" "$busy" <<'PY'
import json, statistics, sys
work, runs, deadline, busy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
step, proc, how = [], [], {}
for i in range(1, runs + 1):
    r = json.load(open(f"{work}/out-{i}.json"))
    s = r["steps"][0]
    step.append(s["wall_us"] / 1000)
    proc.append(int(open(f"{work}/process-{i}.ms").read()))
    how[s["summary"]] = how.get(s["summary"], 0) + 1
def row(name, xs):
    xs = sorted(xs)
    print(f"{name:<8} median {statistics.median(xs):7.0f} ms  max {xs[-1]:7.0f} ms  "
          f"max/deadline {xs[-1] / deadline:5.3f}")
print(f"{runs} runs, deadline {deadline} ms, {busy} busy processes")
row("step", step)
row("process", proc)
for k, v in how.items():
    print(f"{v:>3}x {k}")
PY
