#!/usr/bin/env bash
# Times RB-0031's bad-deploy path live (moto ECS + redis-server, metrics
# replayed) against the same backend actions done by hand with the AWS CLI
# and redis-cli, in one run so the figures compare.
#
#   bash scripts/live-vs-cli.sh [RUNS]
#
# Needs: redis-server, redis-cli, moto_server, aws (pip install awscli), and
# a release build (`cargo build --release`).
#
# Every timed run does the work: each runbook run is a new incident in a
# state directory of its own (never "this incident was handled already",
# which only prints a stored report), and after each timed run, runbook or
# by hand, the script checks that moto's service moved back to the previous
# task definition (and, for the runbook, that `runbook runs --json` shows one
# resolved run with one change applied to the service), and fails otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
bin=target/release/runbook
[ -x "$bin" ] || cargo build --release -q

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
moto_port=$(free_port); redis_port=$(free_port)
MOTO_ECS_SERVICE_RUNNING=2 moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $moto_pid $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
# Bounded waits: 30 s each, then say which server did not come up.
up() { # WHAT COMMAND...
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "live-vs-cli: $what did not start within 30 s; its log's end:" >&2
  tail -n 20 "$work"/*.log >&2; exit 1
}
up "moto_server on port $moto_port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$moto_port"
up "redis-server on port $redis_port" redis-cli -p "$redis_port" ping

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
aws_() { aws --endpoint-url "http://127.0.0.1:$moto_port" "$@"; }
aws_ ecs create-cluster --cluster-name prod >/dev/null
for rev in 1 2 3; do
  aws_ ecs register-task-definition --family auth-td \
    --container-definitions "[{\"name\":\"app\",\"image\":\"auth:$rev\",\"memory\":128}]" >/dev/null
done
aws_ ecs create-service --cluster prod --service-name auth --task-definition auth-td:3 --desired-count 2 >/dev/null
topic=$(aws_ sns create-topic --name incidents --query TopicArn --output text)

cat >"$work/metrics.toml" <<'TOML'
[[series]]
namespace = "AuthService"
name = "auth-service.token.validation.duration"
dimensions = { Service = "auth-service" }
statistic = "p99"
values = [1460.0, 121.0]

[[series]]
namespace = "AuthService"
name = "auth-service.token.validation.success_rate"
dimensions = { Service = "auth-service" }
statistic = "average"
values = [99.9]
TOML
cat >"$work/env.toml" <<TOML
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:$moto_port"
[metrics]
source = "replay"
path = "metrics.toml"
[redis.session-store]
url = "redis://127.0.0.1:$redis_port"
[flags]
store = "file"
path = "flags.json"
[ecs."production/auth-service"]
cluster = "prod"
service = "auth"
[notify.targets.auth-team-oncall]
kind = "sns"
topic_arn = "$topic"
[notify.targets.security-team]
kind = "sns"
topic_arn = "$topic"
[notify.channels.incidents]
kind = "sns"
topic_arn = "$topic"
TOML

reset() { aws_ ecs update-service --cluster prod --service auth --task-definition auth-td:3 >/dev/null; }
incident=$(date -u -d '+1 min' +%Y-%m-%dT%H:%M:%SZ)
n=0
state=

by_runbook() {
  n=$((n + 1))
  state="$work/state-$n"
  RUNBOOK_STATE_DIR="$state" "$bin" run runbooks/RB-0031-auth-service-degradation.md \
    --env "$work/env.toml" --yes --incident-start "$incident" --incident "live-vs-cli-$$-$n" \
    >"$work/out.txt" \
    || { echo "live-vs-cli: the run failed (exit $?):" >&2; cat "$work/out.txt" >&2; exit 1; }
}

# Outside the timed window: the rollback happened.
task_definition() {
  aws_ ecs describe-services --cluster prod --services auth \
    --query 'services[0].taskDefinition' --output text
}
check_rolled_back() {
  local td
  td=$(task_definition)
  case "$td" in
    auth-td:2 | */auth-td:2) ;;
    *) echo "live-vs-cli: $1 did not roll back: the service is on \`$td\`" >&2; exit 1 ;;
  esac
}
check_by_runbook() {
  grep -q "status: resolved" "$work/out.txt" \
    || { echo "live-vs-cli: the run did not resolve:" >&2; cat "$work/out.txt" >&2; exit 1; }
  if grep -q "was handled by run" "$work/out.txt"; then
    echo "live-vs-cli: the run replayed a stored report instead of running" >&2; exit 1
  fi
  # What the product says the run did (`runs --json`: one run, resolved,
  # one change applied to the service), not a reading of journal internals.
  local seen
  seen=$(RUNBOOK_STATE_DIR="$state" "$bin" runs --json | python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
applied = [a for r in runs for a in r["applied"] if a.endswith(" production/auth-service")]
print(len(runs), ",".join(r["status"] for r in runs), len(applied))
')
  [ "$seen" = "1 resolved 1" ] \
    || { echo "live-vs-cli: expected one resolved run with one change applied to the service; runs --json says (runs, statuses, applied) $seen" >&2; exit 1; }
  check_rolled_back "the runbook run"
}
check_by_hand() { check_rolled_back "the CLI actions"; }

# The same backend actions, by hand: session store health, the service's
# deployments, the previous revision, the rollback, one stability poll, and
# the two connection readings of the verification.
by_hand() {
  redis-cli -p "$redis_port" ping >/dev/null
  redis-cli -p "$redis_port" info clients >/dev/null
  redis-cli -p "$redis_port" info stats >/dev/null
  aws_ ecs describe-services --cluster prod --services auth >/dev/null
  aws_ ecs describe-services --cluster prod --services auth >/dev/null
  aws_ ecs list-task-definitions --family-prefix auth-td --status ACTIVE >/dev/null
  aws_ ecs update-service --cluster prod --service auth --task-definition auth-td:2 --force-new-deployment >/dev/null
  aws_ ecs describe-services --cluster prod --services auth >/dev/null
  redis-cli -p "$redis_port" info clients >/dev/null
  redis-cli -p "$redis_port" info stats >/dev/null
  redis-cli -p "$redis_port" info clients >/dev/null
  redis-cli -p "$redis_port" info stats >/dev/null
  aws_ sns publish --topic-arn "$topic" --message "resolved" >/dev/null
}

ms() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Appends each run's milliseconds to FILE (in this shell, so `n` and
# `state` carry over and a failed check ends the script).
time_it() {
  local f=$1 out=$2 i t0 t1
  : >"$out"
  for i in $(seq 1 "$runs"); do
    reset
    t0=$(ms); "$f"; t1=$(ms)
    "check_$f"
    echo $(( (t1 - t0) / 1000000 )) >>"$out"
  done
}

reset; by_runbook; check_by_runbook  # warm the compiled-component cache
time_it by_runbook "$work/rb.ms"
time_it by_hand "$work/cli.ms"
rb=$(median <"$work/rb.ms")
cli=$(median <"$work/cli.ms")
echo "RB-0031 bad-deploy path, live against moto + redis-server (median of $runs runs, each checked: rolled back)"
echo "  runbook run --env (5 sandboxed steps, approvals):        ${rb} ms"
echo "  same backend actions by aws CLI + redis-cli:            ${cli} ms"
awk -v a="$rb" -v b="$cli" 'BEGIN { printf "  ratio CLI / runbook: %.1fx\n", b / a }'
