//! Sandbox claims, each proven by a plugin that tries to break out: files,
//! sockets, environment, endless loops, unbounded memory, ungranted
//! interfaces, out-of-scope calls, and altered components.

mod common;

use common::{RB0031, audit_lines, root, run, step};
use runbook_core::grants::Grants;
use runbook_core::manifest::LoadedManifest;
use runbook_engine::plugin::Plugin;
use runbook_engine::runtime::Runtime;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

const SANDBOX: &str = "tests/fixtures/runbooks/sandbox.md";
const SANDBOX_SIM: &str = "tests/fixtures/scenarios/sandbox.toml";

/// The sandbox runbook, pointed at a real listening socket; every step must
/// be contained and the run must carry on to `resolved`.
#[test]
fn every_escape_attempt_is_contained_and_the_run_carries_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("sandbox.md");
    let text = std::fs::read_to_string(root().join(SANDBOX))
        .unwrap()
        .replace("127.0.0.1:9", &addr);
    std::fs::write(&runbook, text).unwrap();
    let log = dir.path().join("audit.jsonl");
    let plugins = root().join("plugins");
    let out = run(&[
        "run",
        runbook.to_str().unwrap(),
        "--sim",
        SANDBOX_SIM,
        "--json",
        "--plugins",
        plugins.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    // Guest stdout is captured into the report: were it inherited, stdout
    // would not parse as one JSON document.
    let report = out.json();
    assert_eq!(report["status"], "resolved", "{report:#}");
    assert_eq!(out.code, 0);

    let files = step(&report, "files");
    assert_eq!(files["outcome"], "contained");
    assert_eq!(files["facts"]["escaped"], "");
    assert!(
        files["facts"]["errors"]
            .as_str()
            .unwrap()
            .contains("read /etc/passwd")
    );
    assert!(!Path::new("/tmp/runbook-escape-fs").exists());

    let env = step(&report, "env");
    assert_eq!(env["outcome"], "contained", "{env:#}");
    assert_eq!(
        env["facts"]["home"],
        "error: environment variable not found"
    );
    assert_eq!(env["stdout"], "escape-env: hello on stdout\n");
    assert_eq!(env["stderr"], "escape-env: hello on stderr\n");
    assert!(!out.stderr.contains("hello on stderr"));

    let net = step(&report, "net");
    assert_eq!(net["outcome"], "contained", "{net:#}");
    assert!(
        net["facts"]["errors"]
            .as_str()
            .unwrap()
            .contains(&format!("connect {addr}"))
    );
    assert!(
        listener.accept().is_err(),
        "the guest reached the test's socket"
    );

    let overreach = step(&report, "overreach");
    assert_eq!(overreach["outcome"], "contained", "{overreach:#}");
    let calls = overreach["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c["allowed"] == false && c["error"] == "denied")
    );
    assert_eq!(
        calls[0]["result"],
        "denied: mutate of `BILLING_KILL_SWITCH` via `feature-flags` is not granted (granted: `AUTH_STATELESS_FALLBACK`)"
    );
    assert_eq!(
        calls[1]["result"],
        "denied: mutate of `production/billing` via `ecs` is not granted (granted: `production/auth-service`)"
    );

    let spin = step(&report, "spin");
    assert_eq!(spin["outcome"], "limit-exceeded");
    assert_eq!(spin["facts"]["limit"], "time");
    assert_eq!(
        spin["summary"],
        "limit exceeded: deadline of 300 ms; the step was running guest code and was stopped"
    );

    // Blocked in a WASI sleep, out of epoch interruption's reach: ended
    // at its deadline all the same.
    let sleep = step(&report, "sleep");
    assert_eq!(sleep["outcome"], "limit-exceeded", "{sleep:#}");
    assert_eq!(sleep["facts"]["limit"], "time");
    let summary = sleep["summary"].as_str().unwrap();
    assert_eq!(
        summary,
        "limit exceeded: deadline of 300 ms; the step was blocked in a host call and was stopped"
    );

    let alloc = step(&report, "alloc");
    assert_eq!(alloc["outcome"], "limit-exceeded");
    assert_eq!(alloc["facts"]["limit"], "memory");
    assert!(
        alloc["summary"]
            .as_str()
            .unwrap()
            .starts_with("limit exceeded: memory limit of 32 MiB")
    );

    // The audit log has the denied calls and every step's end.
    let lines = audit_lines(&log);
    let denied: Vec<_> = lines.iter().filter(|l| l["allowed"] == false).collect();
    assert_eq!(denied.len(), 2);
    assert!(
        denied
            .iter()
            .all(|l| l["step"] == "overreach" && l["error"] == "denied")
    );
    for id in ["files", "env", "net", "overreach", "spin", "sleep", "alloc"] {
        let end = lines
            .iter()
            .find(|l| l["event"] == "step-end" && l["step"] == id)
            .unwrap();
        let want = if matches!(id, "spin" | "sleep" | "alloc") {
            "limit-exceeded"
        } else {
            "contained"
        };
        assert_eq!(end["outcome"], want, "{id}");
    }
}

/// A runbook of one step with `plugin`, written to a temp dir.
fn one_step(dir: &Path, plugin: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{plugin}.md"));
    let text = format!(
        "---\nrunbook_id: RB-TEST\ntitle: One step\nservice: none\nseverity_scope: TEST\ntags: []\nfirst_action_step: run it\nsteps:\n  - id: only\n    plugin: {plugin}\n{extra}    on: {{ contained: resolved, escaped: escalated }}\n---\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_ungranted_import_is_refused_before_any_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = one_step(dir.path(), "ungranted-import", "");
    let log = dir.path().join("audit.jsonl");
    let plugins = root().join("plugins");
    let out = run(&[
        "run",
        runbook.to_str().unwrap(),
        "--sim",
        SANDBOX_SIM,
        "--plugins",
        plugins.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stdout.is_empty(), "nothing may run: {}", out.stdout);
    assert!(
        out.stderr.contains("step `only` of")
            && out.stderr.contains(
                "plugin `ungranted-import` imports `runbook:host/ecs@0.2.0`, which its manifest"
            ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "hint: if the plugin should have it, add `ecs = { read = [...] }` under `[grants]`"
        ),
        "{}",
        out.stderr
    );
    let lines = audit_lines(&log);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "refused");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("runbook:host/ecs@0.2.0")
    );
}

/// The linker itself refuses it too, whatever the import check says.
#[test]
fn the_linker_lacks_ungranted_interfaces() {
    let runtime = Runtime::new(None).unwrap();
    let manifest =
        LoadedManifest::load(&root().join("plugins/testing/ungranted-import/plugin.toml")).unwrap();
    let dirs = vec![PathBuf::from(runbook_engine::builtin::BUILT_PLUGINS)];
    let plugin = Plugin::load(&runtime, manifest, &dirs, None).unwrap();
    let grants: Grants = toml::from_str("metrics = { read = [\"*\"] }").unwrap();
    let err = runbook_engine::plan::instance_pre(&runtime, &plugin, &grants)
        .err()
        .expect("linking must fail");
    let text = format!("{err:#}");
    assert!(text.contains("runbook:host/ecs@0.2.0"), "{text}");
    assert!(
        text.contains("matching implementation was not found"),
        "{text}"
    );
    let grants: Grants = toml::from_str("ecs = { read = [\"*\"] }").unwrap();
    assert!(runbook_engine::plan::instance_pre(&runtime, &plugin, &grants).is_ok());
}

#[test]
fn a_step_cannot_widen_its_plugins_grant() {
    let dir = tempfile::tempdir().unwrap();
    let grants = "    inputs: { key: X, cluster: production, service: billing }\n    grants:\n      feature-flags: { mutate: [\"*\"] }\n";
    let runbook = one_step(dir.path(), "overreach", grants);
    let plugins = root().join("plugins");
    let out = run(&[
        "check",
        runbook.to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("step `only` of"), "{}", out.stderr);
    assert!(
        out.stderr.contains("widens the grant of plugin `overreach`: `feature-flags` mutate `*` is wider than the manifest grants (`AUTH_STATELESS_FALLBACK`)"),
        "{}",
        out.stderr
    );
}

/// Copies the plugins RB-0031 uses into `dir`, components beside their
/// manifests, with `sha256` pinned.
fn pinned_plugins(dir: &Path) {
    let built = Path::new(runbook_engine::builtin::BUILT_PLUGINS);
    for entry in std::fs::read_dir(root().join("plugins/steps")).unwrap() {
        let src = entry.unwrap().path();
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        let dst = dir.join(&name);
        std::fs::create_dir_all(&dst).unwrap();
        let wasm = format!("{}.wasm", name.replace('-', "_"));
        let bytes = std::fs::read(built.join(&wasm)).unwrap();
        std::fs::write(dst.join(&wasm), &bytes).unwrap();
        let mut manifest = std::fs::read_to_string(src.join("plugin.toml")).unwrap();
        let digest = runbook_core::hash::sha256_hex(&bytes);
        let component_line = format!("component = \"{wasm}\"\n");
        assert!(manifest.contains(&component_line), "{name}: {manifest}");
        manifest = manifest.replace(
            &component_line,
            &format!("{component_line}sha256 = \"{digest}\"\n"),
        );
        std::fs::write(dst.join("plugin.toml"), manifest).unwrap();
    }
}

#[test]
fn an_altered_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pinned_plugins(dir.path());
    // One bit flipped after review.
    let wasm = dir.path().join("set-flag/set_flag.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&wasm, bytes).unwrap();
    let log = dir.path().join("audit.jsonl");
    let plugins = dir.path().to_str().unwrap();
    let out = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/healthy.toml",
        "--plugins",
        plugins,
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("digest mismatch for plugin `set-flag`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: the component changed since it was reviewed"),
        "{}",
        out.stderr
    );
    let lines = audit_lines(&log);
    assert_eq!(lines[0]["event"], "refused");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("digest mismatch")
    );
}

/// Plugins from `plugin_dirs` (manifests), their components from the
/// build, unlocked.
fn built_with(plugin_dirs: PathBuf) -> runbook_engine::sources::Sources {
    runbook_engine::sources::Sources {
        plugin_dirs: vec![plugin_dirs],
        component_dirs: vec![common::built_plugins()],
        locked: false,
        trust: None,
        policies: None,
    }
}

/// A simulated run of `scenario` named `id`, every change approved.
fn sim_config(
    scenario: &runbook_capabilities::scenario::Scenario,
    id: &str,
) -> runbook_engine::run_config::RunConfig {
    runbook_engine::run_config::RunConfig::simple(
        id,
        "test",
        scenario.backends().unwrap(),
        std::sync::Arc::new(runbook_capabilities::approval::Approver::new(
            runbook_core::approval::Policy::All,
            true,
            false,
        )),
    )
}

/// A plugin directory with `name`'s manifest (component from the build)
/// under a new deadline.
fn with_deadline(dir: &Path, src: &str, name: &str, timeout_ms: u64) {
    let manifest = std::fs::read_to_string(root().join(src).join("plugin.toml")).unwrap();
    let mut out = String::new();
    for line in manifest.lines() {
        if line.starts_with("timeout_ms") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line == "[limits]" {
            out.push_str(&format!("timeout_ms = {timeout_ms}\n"));
        }
    }
    if !out.contains("[limits]") {
        out.push_str(&format!("\n[limits]\ntimeout_ms = {timeout_ms}\n"));
    }
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("plugin.toml"), out).unwrap();
}

/// A step spinning in guest code does not starve the other runs in the
/// process, even on one thread: guest code yields at every epoch tick. Runs
/// submitted while it spins start at once and their steps meet their own
/// 500 ms deadline; without the yields they would not even start before the
/// spinner's 5 s deadline.
#[test]
fn a_busy_step_does_not_starve_other_runs() {
    use runbook_capabilities::scenario::Scenario;
    use runbook_core::runbook::Runbook;
    use runbook_engine::plan::Plan;
    use runbook_engine::run::execute;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    with_deadline(
        &plugins,
        "plugins/testing/spin-forever",
        "spin-forever",
        5_000,
    );
    with_deadline(
        &plugins,
        "plugins/steps/metric-threshold",
        "metric-threshold",
        500,
    );
    let spin_rb = one_step(dir.path(), "spin-forever", "");
    let check_rb = dir.path().join("check.md");
    std::fs::write(
        &check_rb,
        "---\nrunbook_id: RB-CHECK\ntitle: t\nservice: s\nseverity_scope: T\ntags: []\nfirst_action_step: x\nsteps:\n  - id: check\n    plugin: metric-threshold\n    inputs: { namespace: AuthService, metric: auth-service.token.validation.duration, dimensions: Service=auth-service, threshold: 500 }\n    on: { healthy: resolved, degraded: resolved, no-data: resolved, error: escalated, limit-exceeded: escalated }\n---\n",
    )
    .unwrap();
    let sources = built_with(plugins);
    let runtime = Runtime::with_instances(None, 64).unwrap();
    let spin = Arc::new(Plan::load(&runtime, Runbook::load(&spin_rb).unwrap(), &sources).unwrap());
    let check =
        Arc::new(Plan::load(&runtime, Runbook::load(&check_rb).unwrap(), &sources).unwrap());
    let scenario = Arc::new(
        Scenario::load(&root().join("runbooks/scenarios/session-store-outage.toml")).unwrap(),
    );
    let cfg = |id: &str| sim_config(&scenario, id);
    // One thread runs every step: the worst case for a busy neighbour.
    // Other runs are submitted to it from here while the spinner spins.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let spinning = {
        let (spin, runtime, cfg) = (spin.clone(), runtime.clone(), cfg("spin"));
        handle.spawn(async move { execute(&spin, &runtime, &cfg).await })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        rt.block_on(async {
            let _ = stopped.await;
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let checks: Vec<_> = (0..20)
        .map(|i| {
            let (check, runtime, cfg) = (check.clone(), runtime.clone(), cfg(&format!("c{i}")));
            let submitted = std::time::Instant::now();
            handle.spawn(async move {
                let waited = submitted.elapsed();
                (execute(&check, &runtime, &cfg).await, waited)
            })
        })
        .collect();
    let (spun, checks) = handle.block_on(async {
        let mut done = Vec::new();
        for c in checks {
            done.push(c.await.unwrap());
        }
        (spinning.await.unwrap(), done)
    });
    let _ = stop.send(());
    driver.join().unwrap();
    assert_eq!(
        spun.steps[0].outcome, "limit-exceeded",
        "{:?}",
        spun.steps[0].summary
    );
    for (report, waited) in checks {
        assert_eq!(
            report.steps[0].outcome, "degraded",
            "{}: {}",
            report.run_id, report.steps[0].summary
        );
        assert!(
            waited < std::time::Duration::from_millis(1_000),
            "{} waited {waited:?} to start, behind a busy neighbour",
            report.run_id
        );
    }
}

/// A step in a pooled instance slot finds nothing the step before left
/// in its memory. The snoop plugin runs six times, one after another, in
/// a pool sized for one step at a time (wasmtime's pool hands a module
/// the memory slot it used last, so each instance gets the memory the
/// one before wrote in), each time looking for the marker the one before
/// wrote in a static of the module's initial image and in pages it grew
/// the memory by. The pool resets only the pages a step dirtied
/// (PAGEMAP_SCAN where the kernel has it): a page it missed would show
/// here.
#[test]
fn a_pooled_slot_keeps_nothing_of_the_step_before() {
    use runbook_capabilities::scenario::Scenario;
    use runbook_core::runbook::Runbook;
    use runbook_engine::plan::Plan;
    use runbook_engine::run::execute;

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    with_deadline(
        &plugins,
        "plugins/testing/memory-snoop",
        "memory-snoop",
        5_000,
    );
    let runbook = one_step(dir.path(), "memory-snoop", "");
    let sources = built_with(plugins);
    let runtime = Runtime::with_instances(None, 1).unwrap();
    let plan = Plan::load(&runtime, Runbook::load(&runbook).unwrap(), &sources).unwrap();
    let scenario =
        Scenario::load(&root().join("runbooks/scenarios/session-store-outage.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..6 {
        let cfg = sim_config(&scenario, &format!("snoop-{i}"));
        let report = rt.block_on(execute(&plan, &runtime, &cfg));
        let step = &report.steps[0];
        assert_eq!(step.outcome, "contained", "run {i}: {}", step.summary);
        // It did leave its marker behind, for the next one to look for.
        assert_eq!(step.facts["wrote"], "yes", "run {i}");
    }
}

fn sha256_of(path: &Path) -> String {
    runbook_core::hash::sha256_hex(&std::fs::read(path).unwrap())
}

/// The cache entry of the plugin built as `wasm`, under `cache`.
fn entry(cache: &Path, wasm: &str) -> PathBuf {
    let digest = sha256_of(&common::built_plugins().join(wasm));
    let mut found = Vec::new();
    for sub in std::fs::read_dir(cache).unwrap() {
        let p = sub.unwrap().path().join(format!("{digest}.cwasm"));
        if p.is_file() {
            found.push(p);
        }
    }
    assert_eq!(found.len(), 1, "{wasm}: {found:?}");
    found.remove(0)
}

/// Cache entries are native code: a patched one and another plugin's
/// valid one copied under this plugin's name are both compiled afresh,
/// never run, and the run goes the way the real plugins take it.
#[test]
fn a_poisoned_or_swapped_cache_entry_is_never_run() {
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
        "--plugins",
        "plugins",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--json",
    ];
    assert_eq!(run(&args).code, 0);
    let metric = entry(cache.path(), "metric_threshold.wasm");
    let flag = entry(cache.path(), "set_flag.wasm");
    let redis = entry(cache.path(), "redis_health.wasm");
    // Swapped: set-flag's entry where metric-threshold's belongs.
    std::fs::copy(&flag, &metric).unwrap();
    // Poisoned: one byte of redis-health's compiled code changed.
    let mut bytes = std::fs::read(&redis).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&redis, &bytes).unwrap();
    let out = run(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(step(&report, "check-latency")["outcome"], "degraded");
    assert_eq!(step(&report, "session-store")["outcome"], "unreachable");
    assert_eq!(common::path(&report).len(), 6);
    // Both entries were compiled again from the right components.
    assert_ne!(
        std::fs::read(&metric).unwrap(),
        std::fs::read(&flag).unwrap()
    );
    assert_ne!(std::fs::read(&redis).unwrap(), bytes);
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("shared");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/healthy.toml",
        "--plugins",
        "plugins",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("warning: not using the component cache: `")
            && out.stderr.contains("is writable by others (mode 777)"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

/// A change still being applied when the step's deadline passes leaves its
/// mark: the intent is in the audit log before the backend is called, and
/// the report keeps the call, marked interrupted (it may have taken effect).
#[test]
fn a_mutation_cut_off_by_the_deadline_is_recorded_as_interrupted() {
    use runbook_capabilities::approval::Approver;
    use runbook_capabilities::backends::Backends;
    use runbook_capabilities::bindings::Error;
    use runbook_capabilities::feature_flags::Cap;
    use runbook_capabilities::feature_flags::FlagsBackend;
    use runbook_core::approval::Policy;
    use runbook_core::runbook::Runbook;
    use runbook_engine::plan::Plan;
    use runbook_engine::run::execute;
    use runbook_engine::run_config::RunConfig;
    use runbook_journal::audit::AuditLog;
    use std::sync::Arc;
    use std::time::Instant;

    /// Reads answer at once; a write never returns.
    struct Stuck;
    #[async_trait::async_trait]
    impl FlagsBackend for Stuck {
        async fn get(&self, _: &str, _: Instant) -> Result<Option<String>, Error> {
            Ok(Some("false".into()))
        }
        async fn set(&self, _: &str, _: &str, _: Instant) -> Result<Option<String>, Error> {
            std::future::pending().await
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    with_deadline(&plugins, "plugins/steps/set-flag", "set-flag", 300);
    let rb = dir.path().join("flip.md");
    std::fs::write(
        &rb,
        "---\nrunbook_id: RB-FLIP\ntitle: t\nservice: s\nseverity_scope: T\ntags: []\nfirst_action_step: x\nsteps:\n  - id: flip\n    plugin: set-flag\n    inputs: { key: AUTH_STATELESS_FALLBACK, value: \"true\" }\n    grants: { feature-flags: { mutate: [AUTH_STATELESS_FALLBACK] } }\n    on: { set: resolved, unchanged: resolved, error: escalated, limit-exceeded: escalated }\n---\n",
    )
    .unwrap();
    let sources = built_with(plugins);
    let runtime = Runtime::new(None).unwrap();
    let plan = Plan::load(&runtime, Runbook::load(&rb).unwrap(), &sources).unwrap();
    let log = dir.path().join("audit.jsonl");
    let clock = runbook_capabilities::sim::World::new(0, None);
    let mut cfg = RunConfig::simple(
        "cut",
        "test",
        Backends::builder(clock)
            .with::<Cap>(Arc::new(Stuck))
            .build(),
        Arc::new(Approver::new(Policy::All, false, false)),
    );
    cfg.audit = Some(Arc::new(AuditLog::open(&log).unwrap()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(execute(&plan, &runtime, &cfg));
    let flip = &report.steps[0];
    assert_eq!(flip.outcome, "limit-exceeded", "{}", flip.summary);
    let set = flip
        .calls
        .iter()
        .find(|c| c.operation == "set")
        .expect("the set call is kept");
    assert_eq!(set.error.as_deref(), Some("interrupted"));
    let lines = audit_lines(&log);
    let intent = lines
        .iter()
        .position(|l| l["event"] == "intent")
        .expect("an intent line");
    assert_eq!(lines[intent]["resource"], "AUTH_STATELESS_FALLBACK");
    assert_eq!(
        lines[intent]["change"],
        "set flag `AUTH_STATELESS_FALLBACK` from `false` to `true`"
    );
}

/// Busy processes, one more than there are cores, killed when dropped.
struct CpuLoad(Vec<std::process::Child>);

impl CpuLoad {
    fn start(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A spin loop with the CPU oversubscribed (four busy processes on this
/// machine's cores) is still stopped by its deadline, as guest code, and
/// nothing it does after its end reaches the audit log. How late it ends
/// is measured by `scripts/deadline-under-load.sh`, not asserted here.
#[test]
fn a_spin_loop_under_cpu_load_is_stopped_as_guest_code() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    with_deadline(
        &plugins,
        "plugins/testing/spin-forever",
        "spin-forever",
        1_000,
    );
    let runbook = one_step(dir.path(), "spin-forever", "");
    let log = dir.path().join("audit.jsonl");
    let _load = CpuLoad::start(4);
    let out = run(&[
        "run",
        runbook.to_str().unwrap(),
        "--sim",
        SANDBOX_SIM,
        "--plugins",
        plugins.to_str().unwrap(),
        "--json",
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    let report = out.json();
    let only = step(&report, "only");
    assert_eq!(only["outcome"], "limit-exceeded", "{report:#}");
    assert_eq!(only["facts"]["limit"], "time");
    assert_eq!(
        only["summary"],
        "limit exceeded: deadline of 1000 ms; the step was running guest code and was stopped"
    );
    let lines = audit_lines(&log);
    let end = lines
        .iter()
        .position(|l| l["event"] == "step-end")
        .expect("a step-end line");
    assert!(
        lines[end..].iter().all(|l| l.get("call").is_none()),
        "{lines:#?}"
    );
}

/// Runs `runbook` with `args`, stdout to a file; returns the report and the
/// child's peak RSS in MiB (`wait4`'s `ru_maxrss`, this child alone).
fn run_measured(args: &[&str], out: &Path) -> (serde_json::Value, u64) {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = common::runbook();
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid; both pointers are to locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.code().is_some(), "killed: {status:?}");
    std::mem::forget(child);
    let report = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    (report, usage.ru_maxrss as u64 / 1024)
}

/// The host documents that no single step can take it past 256 MiB; a
/// plain RB-0031 run is the baseline.
const RSS_BOUND_MIB: u64 = 256;

/// A step handing the host far more than it keeps (10 MiB arguments,
/// 250 log lines with 4 MiB keys, a 50 MiB fact or summary, 100 MiB of
/// output, 5,000 calls) ends `limit-exceeded` naming the limit, or has its
/// output cut and marked; the host stays under its documented bound and
/// the report stays small.
#[test]
fn a_step_flooding_the_host_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = root().join("plugins");
    for (what, limit) in [
        ("arguments", Some("arguments")),
        ("log-keys", Some("log")),
        ("facts", Some("facts")),
        ("summary", Some("summary")),
        ("calls", Some("calls")),
        ("output", None),
    ] {
        let case = dir.path().join(what);
        std::fs::create_dir_all(&case).unwrap();
        let runbook = one_step(&case, "flood", &format!("    inputs: {{ what: {what} }}\n"));
        let out = dir.path().join(format!("{what}.json"));
        let (report, rss) = run_measured(
            &[
                "run",
                runbook.to_str().unwrap(),
                "--sim",
                SANDBOX_SIM,
                "--plugins",
                plugins.to_str().unwrap(),
                "--json",
            ],
            &out,
        );
        let only = step(&report, "only");
        match limit {
            Some(limit) => {
                assert_eq!(only["outcome"], "limit-exceeded", "{what}: {only:#}");
                assert_eq!(only["facts"]["limit"], limit, "{what}: {only:#}");
            }
            None => {
                assert_eq!(only["outcome"], "contained", "{what}: {only:#}");
                assert_eq!(only["stdout_truncated"], true);
                assert_eq!(only["stderr_truncated"], true);
            }
        }
        assert!(rss < RSS_BOUND_MIB, "{what}: host peak RSS {rss} MiB");
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(size < 2 << 20, "{what}: a {size}-byte report");
        eprintln!(
            "{what}: {} peak RSS {rss} MiB, report {size} bytes",
            only["outcome"]
        );
    }
}
