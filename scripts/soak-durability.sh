#!/usr/bin/env bash
# Soaks durable runs: RB-0031's live bad-deploy path against moto (ECS) and
# redis-server, with the release binary.
#
#   scripts/soak-durability.sh [CRASH_TRIALS] [PAIRS]   (default 100 40)
#
# Crash trials: start a run, kill -9 it after a random (seeded) delay
# spread over a run's length, then resume it (or start it again if it
# never got going) until it finishes. Pairs: two runs of the same service
# started together (half as one incident, half as two incidents).
# Reports: rollbacks that reached ECS, double rollbacks (must be 0),
# rollbacks with no intent in a journal (must be 0), resume wall times.
# Needs what `scripts/test` installs (it reuses target/test-tools/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-100}
pairs=${2:-40}
venv=target/test-tools/venv
[ -x "$venv/bin/python" ] || { echo "run scripts/test once first (it installs moto)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing (scripts/test installs it)" >&2; exit 1; }
[ -x target/release/runbook ] || cargo build --release -q
work=$(mktemp -d)
read -r moto_port redis_port < <("$venv/bin/python" -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
MOTO_ECS_SERVICE_RUNNING=2 "$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $moto_pid $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$moto_port") 2>/dev/null; do sleep 0.2; done
until (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; do sleep 0.1; done
"$venv/bin/python" scripts/soak_durability.py "$trials" "$pairs" "http://127.0.0.1:$moto_port" "redis://127.0.0.1:$redis_port" "$work"
