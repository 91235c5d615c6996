//! What a step costs, measured in one run so the figures compare:
//! - the same step logic as native Rust (the floor),
//! - one step through the host (pooled instance, instantiate, call,
//!   teardown, grant check and trail) against the simulation,
//! - instantiating alone,
//! - a whole RB-0031 run in-process, and the same with the plan loaded,
//! - compiling a component, and loading it from the disk cache.
//!
//! Run with `cargo bench --bench step_overhead`.

use runbook_capabilities::approval::Approver;
use runbook_capabilities::bindings::runbook::host::metrics::{Dimension, MetricQuery};
use runbook_capabilities::metrics::MetricsBackend;
use runbook_capabilities::metrics::sim::SimMetrics;
use runbook_capabilities::scenario::Scenario;
use runbook_core::approval::Policy;
use runbook_core::hash::sha256_hex;
use runbook_core::runbook::Runbook;
use runbook_engine::plan::Plan;
use runbook_engine::run::execute;
use runbook_engine::run_config::RunConfig;
use runbook_engine::runtime::Runtime;
use runbook_engine::sources::Sources;
use runbook_engine::step::run_step;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Median of `n` timings of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// The metric-threshold plugin's logic, natively: parse the inputs, query
/// the simulated backend, compare.
async fn native_step(backend: &dyn MetricsBackend, inputs: &[(String, String)]) -> &'static str {
    let get = |k: &str| {
        inputs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let threshold: f64 = get("threshold").unwrap().parse().unwrap();
    let dimensions = get("dimensions")
        .unwrap_or("")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(n, v)| Dimension {
            name: n.trim().into(),
            value: v.trim().into(),
        })
        .collect();
    let q = MetricQuery {
        namespace: get("namespace").unwrap().into(),
        name: get("metric").unwrap().into(),
        dimensions,
        statistic: get("statistic").unwrap_or("p99").into(),
        period_seconds: 60,
        window_seconds: 300,
    };
    let far = Instant::now() + Duration::from_secs(60);
    let points = backend.query(&q, far).await.unwrap();
    match points.last() {
        Some(p) if p.value > threshold => "degraded",
        Some(_) => "healthy",
        None => "no-data",
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rb_path = root().join("runbooks/RB-0031-auth-service-degradation.md");
    let sim_path = root().join("runbooks/scenarios/session-store-outage.toml");
    let wasm = Path::new(env!("RUNBOOK_BUILT_PLUGINS")).join("metric_threshold.wasm");
    let bytes = std::fs::read(&wasm).expect("plugins are built by the host's build script");
    let digest = sha256_hex(&bytes);

    // Compile: a fresh runtime each time, no cache.
    let compile = median(9, || {
        let rt = Runtime::new(None).unwrap();
        rt.component(&bytes, &digest, &wasm).unwrap();
    });
    // Disk cache: a fresh runtime each time (no in-memory hit), warm disk.
    let cache = tempfile::tempdir().unwrap();
    Runtime::new(Some(cache.path().into()))
        .unwrap()
        .component(&bytes, &digest, &wasm)
        .unwrap();
    let load = median(51, || {
        let rt = Runtime::new(Some(cache.path().into())).unwrap();
        rt.component(&bytes, &digest, &wasm).unwrap();
    });

    // The built-in plugins, as the CLI runs RB-0031.
    let runtime = Runtime::new(None).unwrap();
    let sources = Sources {
        plugin_dirs: vec![],
        component_dirs: vec![],
        locked: false,
        trust: None,
        policies: None,
    };
    let plan = Plan::load(&runtime, Runbook::load(&rb_path).unwrap(), &sources).unwrap();
    let scenario = Scenario::load(&sim_path).unwrap();
    let cfg = || {
        RunConfig::simple(
            "bench",
            "bench",
            scenario.backends().unwrap(),
            Arc::new(Approver::new(Policy::All, true, false)),
        )
    };
    let step = plan.step("check-latency").unwrap();

    // Native: the same logic, no sandbox.
    let world = runbook_capabilities::sim::World::new(scenario.start.0, None);
    let native_backend = SimMetrics::new(scenario.metrics.clone(), world);
    let inputs = step.def.input_pairs();
    let native = median(2001, || {
        assert_eq!(
            rt.block_on(native_step(&native_backend, &inputs)),
            "degraded"
        );
    });

    // One step through the host.
    let c = cfg();
    for _ in 0..200 {
        rt.block_on(run_step(step, &runtime, &c));
    }
    let one_step = median(2001, || {
        let r = rt.block_on(run_step(step, &runtime, &c));
        assert_eq!(r.outcome, "degraded");
    });

    // Instantiating alone (and dropping the store).
    let instantiate = median(2001, || {
        rt.block_on(async {
            let mut store = wasmtime::Store::new(&runtime.engine, state(&c));
            store.set_epoch_deadline(1 << 40);
            match step.pre(&runtime).unwrap() {
                runbook_engine::runtime::Pre::Latest(pre) => {
                    pre.instantiate_async(&mut store).await.unwrap();
                }
                runbook_engine::runtime::Pre::V0_1(pre) => {
                    pre.instantiate_async(&mut store).await.unwrap();
                }
            };
        });
    });

    // A whole RB-0031 run (5 steps on this path), plan already loaded.
    let whole = median(501, || {
        let report = rt.block_on(execute(&plan, &runtime, &cfg()));
        assert_eq!(report.steps.len(), 6);
    });
    // And with the plan load (manifests, built-ins, linking).
    let with_load = median(51, || {
        let rt2 = Runtime::new(None).unwrap();
        let plan = Plan::load(&rt2, Runbook::load(&rb_path).unwrap(), &sources).unwrap();
        rt.block_on(execute(&plan, &rt2, &cfg()));
    });

    // The same run with a journal (every line fsync'd, or not): what
    // durability costs per step.
    let journaled = |fsync: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = runbook_journal::local::LocalStore::with_fsync(dir.path(), fsync).unwrap();
        let mut n = 0;
        let d = median(51, || {
            n += 1;
            let holder = runbook_journal::holder::Holder::me(&format!("bench-{fsync}-{n}"));
            let journal = std::sync::Arc::new(
                runbook_journal::store::Store::start_run(&*store, &format!("i-{n}"), &holder)
                    .unwrap(),
            );
            let mut c = cfg();
            c.durable = Some(runbook_capabilities::durable::Durable {
                journal,
                store: store.clone(),
                replay: Default::default(),
                holder,
                leases: true,
                since_ms: runbook_core::time::now_ms(),
                own_changes: Vec::new().into(),
                identities: None,
                runbook: "RB-0031".into(),
                incident: format!("i-{n}"),
            });
            let report = rt.block_on(execute(&plan, &runtime, &c));
            assert_eq!(report.steps.len(), 6);
        });
        drop(dir);
        d
    };
    let journal_fsync = journaled(true);
    let journal_no_fsync = journaled(false);
    // A step's two journal lines alone (`step-start`, and `step-end` with
    // the step's whole report), appended to a chain.
    let step_report = serde_json::to_value(rt.block_on(run_step(step, &runtime, &c))).unwrap();
    let lines = |fsync: bool| {
        let dir = tempfile::tempdir().unwrap();
        let log =
            runbook_journal::chain::ChainLog::open(&dir.path().join("j.jsonl"), fsync).unwrap();
        median(201, || {
            log.append(serde_json::json!({ "event": "step-start", "step": "check-latency" }))
                .unwrap();
            log.append(serde_json::json!({ "event": "step-end", "report": step_report }))
                .unwrap();
        })
    };
    let step_lines_fsync = lines(true);
    let step_lines_no_fsync = lines(false);
    let runtime_new = median(21, || {
        Runtime::new(None).unwrap();
    });
    let rt_once = Runtime::new(None).unwrap();
    let plan_load_warm = median(51, || {
        Plan::load(&rt_once, Runbook::load(&rb_path).unwrap(), &sources).unwrap();
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("step_overhead (medians, one run; compare ratios, not absolutes)");
    let rows = [
        ("metric-threshold logic, native Rust", native),
        ("one step through the host", one_step),
        ("  of which instantiate + drop", instantiate),
        ("RB-0031 session-store path, 6 steps", whole),
        ("same, journaled, each line fsync'd", journal_fsync),
        ("same, journaled, no fsync", journal_no_fsync),
        ("a step's journal lines, fsync'd", step_lines_fsync),
        ("a step's journal lines, no fsync", step_lines_no_fsync),
        ("same, incl. plan load (built-ins)", with_load),
        ("  of which a new runtime (engine, pool)", runtime_new),
        ("  of which plan load, warm runtime", plan_load_warm),
        ("compile metric-threshold component", compile),
        ("load it from the disk cache", load),
    ];
    for (what, d) in rows {
        println!("  {what:<38} {:>10.1} µs", us(d));
    }
    println!("ratios");
    println!(
        "  one step / native                      {:>10.1}x",
        us(one_step) / us(native)
    );
    println!(
        "  host overhead per step (step - native) {:>10.1} µs",
        us(one_step) - us(native)
    );
    println!(
        "  6-step run / one step                  {:>10.1}x",
        us(whole) / us(one_step)
    );
    println!(
        "  journaled run / plain run, fsync       {:>10.1}x",
        us(journal_fsync) / us(whole)
    );
    println!(
        "  journaled run / plain run, no fsync    {:>10.1}x",
        us(journal_no_fsync) / us(whole)
    );
    println!(
        "  a step's lines, fsync / no fsync       {:>10.1}x",
        us(step_lines_fsync) / us(step_lines_no_fsync)
    );
    println!(
        "  compile / cache load                   {:>10.1}x",
        us(compile) / us(load)
    );
}

/// A step state like the runner's, for timing instantiation alone.
fn state(c: &RunConfig) -> runbook_capabilities::state::StepState {
    use runbook_capabilities::state::StepSetup;
    runbook_capabilities::state::StepState::new(StepSetup {
        wasi: wasmtime_wasi::WasiCtx::builder().build(),
        memory_bytes: 16 << 20,
        checker: runbook_core::grants::GrantChecker::new(Default::default()),
        backends: c.backends.clone(),
        caller: runbook_journal::audit::Caller {
            run_id: "bench".into(),
            step: "s".into(),
            plugin: "p".into(),
            plugin_digest: String::new(),
        },
        audit: None,
        approver: c.approver.clone(),
        shared: runbook_capabilities::state::StepShared::new(
            Instant::now() + Duration::from_secs(60),
        ),
        durable: None,
        budget: runbook_capabilities::durable::Budget::new(5, 0),
        history: std::sync::Arc::from(Vec::new()),
        guard: None,
    })
}
