"""The driver of scripts/soak-durability.sh (see there)."""
import json, os, random, signal, subprocess, sys, time, datetime, glob, statistics

import boto3

trials, pairs = int(sys.argv[1]), int(sys.argv[2])
moto, redis_url, work = sys.argv[3], sys.argv[4], sys.argv[5]
root = os.getcwd()
binary = os.path.join(root, "target/release/runbook")
rb = os.path.join(root, "runbooks/RB-0031-auth-service-degradation.md")
ecs = boto3.client("ecs", endpoint_url=moto, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
env_vars = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                AWS_EC2_METADATA_DISABLED="true", RUNBOOK_CACHE_DIR=os.path.join(work, "cache"))
# RB-0031's escalation and resolution messages go to an SNS topic in moto.
sns = boto3.client("sns", endpoint_url=moto, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
topic = sns.create_topic(Name="soak-incidents")["TopicArn"]
notify = "".join(f'[notify.{kind}.{alias}]\nkind = "sns"\ntopic_arn = "{topic}"\n\n'
                 for kind, alias in [("targets", "auth-team-oncall"), ("targets", "security-team"),
                                     ("channels", "incidents")])
random.seed(20261127)
counter = [0]

def service():
    counter[0] += 1
    n = counter[0]
    cluster, name, family = f"soak-{n}", f"auth-{n}", f"auth-td-{n}"
    ecs.create_cluster(clusterName=cluster)
    for rev in (1, 2, 3):
        ecs.register_task_definition(family=family, containerDefinitions=[
            {"name": "app", "image": f"auth:{rev}", "memory": 128}])
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{family}:3", desiredCount=2)
    return cluster, name, family

def task_definition(cluster, name):
    td = ecs.describe_services(cluster=cluster, services=[name])["services"][0]["taskDefinition"]
    return td.rsplit("/", 1)[-1]

def setup(cluster, name):
    d = os.path.join(work, f"run-{counter[0]}")
    os.makedirs(d)
    with open(os.path.join(d, "metrics.toml"), "w") as f:
        f.write('[[series]]\nnamespace = "AuthService"\nname = "auth-service.token.validation.duration"\n'
                'dimensions = { Service = "auth-service" }\nstatistic = "p99"\nvalues = [1460.0, 121.0]\n\n'
                '[[series]]\nnamespace = "AuthService"\nname = "auth-service.token.validation.success_rate"\n'
                'dimensions = { Service = "auth-service" }\nstatistic = "average"\nvalues = [99.9]\n')
    with open(os.path.join(d, "env.toml"), "w") as f:
        f.write(f'[aws]\nregion = "us-east-1"\nendpoint_url = "{moto}"\nattempt_timeout_ms = 2000\n'
                'operation_timeout_ms = 5000\nmax_attempts = 2\n\n[metrics]\nsource = "replay"\npath = "metrics.toml"\n\n'
                f'[redis.session-store]\nurl = "{redis_url}"\n\n[flags]\nstore = "file"\npath = "flags.json"\n\n'
                f'[ecs."production/auth-service"]\ncluster = "{cluster}"\nservice = "{name}"\n\n{notify}')
    start = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return d, start

def run_cmd(d, start, extra=()):
    return [binary, "run", rb, "--env", os.path.join(d, "env.toml"), "--yes",
            "--incident-start", start, "--state-dir", os.path.join(d, "state"), *extra]

def journals(d):
    return sorted(glob.glob(os.path.join(d, "state", "runs", "*.jsonl")))

def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]

def audit(d):
    """(applied rollbacks, applied rollbacks without an intent before them, journals that fail verify-log)"""
    applied = unrecorded = broken = 0
    for j in journals(d):
        ok = subprocess.run([binary, "verify-log", j], capture_output=True).returncode == 0
        broken += 0 if ok else 1
        ls = lines(j)
        for i, l in enumerate(ls):
            if l.get("event") == "applied" and l.get("resource") == "production/auth-service":
                applied += 1
                if not any(x.get("event") == "intent" and x.get("seq") == l.get("intent") for x in ls[:i]):
                    unrecorded += 1
    return applied, unrecorded, broken

# How long one run takes, to spread the kills over it.
c, n, fam = service()
d, start = setup(c, n)
t = time.monotonic()
subprocess.run(run_cmd(d, start), env=env_vars, capture_output=True)
span = time.monotonic() - t

reached = doubles = unrecorded = broken = 0
resume_times = []
for trial in range(trials):
    c, n, fam = service()
    d, start = setup(c, n)
    p = subprocess.Popen(run_cmd(d, start), env=env_vars, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.uniform(0, span * 1.1))
    p.send_signal(signal.SIGKILL)
    p.wait()
    for _ in range(3):
        # A journal without run-start is a run killed before it did anything.
        started = [j for j in journals(d) if any(l.get("event") == "run-start" for l in lines(j))]
        if any(any(l.get("event") == "run-end" for l in lines(j)) for j in started):
            break
        if started:
            run_id = os.path.basename(started[0])[:-len(".jsonl")]
            t = time.monotonic()
            subprocess.run([binary, "resume", run_id, "--yes", "--state-dir", os.path.join(d, "state")],
                           env=env_vars, capture_output=True)
            resume_times.append(time.monotonic() - t)
        else:
            subprocess.run(run_cmd(d, start), env=env_vars, capture_output=True)
    td = task_definition(c, n)
    moved = 3 - int(td.rsplit(":", 1)[1])
    reached += moved
    doubles += max(0, moved - 1)
    applied, missing, bad = audit(d)
    unrecorded += missing + max(0, moved - applied)
    broken += bad

pair_rollbacks = pair_doubles = pair_blocked = 0
for pair in range(pairs):
    c, n, fam = service()
    d, start = setup(c, n)
    extra = [(), ()] if pair % 2 == 0 else [("--incident", "a"), ("--incident", "b")]
    procs = [subprocess.Popen(run_cmd(d, start, e), env=env_vars, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for e in extra]
    codes = [p.wait() for p in procs]
    pair_blocked += codes.count(5)
    moved = 3 - int(task_definition(c, n).rsplit(":", 1)[1])
    pair_rollbacks += moved
    pair_doubles += max(0, moved - 1)

print(f"crash trials: {trials} (kill -9 after 0..{span * 1.1 * 1000:.0f} ms, seeded), one run = {span * 1000:.0f} ms")
print(f"  rollbacks that reached ECS: {reached}; double rollbacks: {doubles}; rollbacks with no intent: {unrecorded}; journals failing verify-log: {broken}")
if resume_times:
    print(f"  resumes: {len(resume_times)}; wall median {statistics.median(resume_times) * 1000:.0f} ms, max {max(resume_times) * 1000:.0f} ms")
print(f"concurrent pairs: {pairs} (half one incident, half two)")
print(f"  rollbacks: {pair_rollbacks}; double rollbacks: {pair_doubles}; runs blocked (exit 5): {pair_blocked}")
sys.exit(1 if doubles or unrecorded or broken or pair_doubles else 0)
