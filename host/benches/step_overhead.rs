//! What a step costs, measured in one run so the figures compare:
//! compiling a component, loading it from the disk cache, and running one
//! step (fresh store, instantiate, call, journal) against the simulation.
//! Also one whole RB-0031 run, all steps.
//!
//! Run with `cargo bench --bench step_overhead`.

use runbook_host::approval::{Approver, Policy};
use runbook_host::engine::{Runtime, sha256_hex};
use runbook_host::plan::{Plan, Sources};
use runbook_host::run::{RunConfig, execute, run_step};
use runbook_host::runbook::Runbook;
use runbook_host::scenario::Scenario;
use runbook_host::sim::Sim;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
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

fn main() {
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

    // One step, plan loaded once: store + instantiate + call + journal.
    let runtime = Runtime::new(Some(cache.path().into())).unwrap();
    let sources = Sources {
        plugin_dirs: vec![root().join("plugins")],
        component_dirs: vec![PathBuf::from(env!("RUNBOOK_BUILT_PLUGINS"))],
        locked: false,
    };
    let plan = Plan::load(&runtime, Runbook::load(&rb_path).unwrap(), &sources).unwrap();
    let scenario = Scenario::load(&sim_path).unwrap();
    let cfg = || RunConfig {
        run_id: "bench".into(),
        mode: "bench".into(),
        backends: Sim::new(scenario.clone()).backends(),
        audit: None,
        approver: std::sync::Arc::new(Approver::new(Policy::All, true, false)),
    };
    let step = plan.step("check-latency").unwrap();
    let c = cfg();
    for _ in 0..50 {
        run_step(step, &runtime.engine, &c);
    }
    let one_step = median(501, || {
        let r = run_step(step, &runtime.engine, &c);
        assert_eq!(r.outcome, "degraded");
    });

    // A whole RB-0031 run (5 steps on this path), plan already loaded.
    let whole = median(101, || {
        let report = execute(&plan, &runtime.engine, &cfg());
        assert_eq!(report.steps.len(), 5);
    });
    // And with the plan load (manifests, digests, cache loads, linking).
    let with_load = median(21, || {
        let rt = Runtime::new(Some(cache.path().into())).unwrap();
        let plan = Plan::load(&rt, Runbook::load(&rb_path).unwrap(), &sources).unwrap();
        execute(&plan, &rt.engine, &cfg());
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("step_overhead (medians, one run; compare ratios, not absolutes)");
    println!(
        "  compile metric-threshold component   {:>10.1} µs",
        us(compile)
    );
    println!(
        "  load it from the disk cache          {:>10.1} µs",
        us(load)
    );
    println!(
        "  run one step (instantiate + call)    {:>10.1} µs",
        us(one_step)
    );
    println!(
        "  RB-0031 session-store path, 5 steps  {:>10.1} µs",
        us(whole)
    );
    println!(
        "  same, incl. plan load from cache     {:>10.1} µs",
        us(with_load)
    );
    println!("ratios");
    println!(
        "  compile / cache load                 {:>10.1}x",
        us(compile) / us(load)
    );
    println!(
        "  compile / one step                   {:>10.1}x",
        us(compile) / us(one_step)
    );
    println!(
        "  5-step run / one step                {:>10.1}x",
        us(whole) / us(one_step)
    );
}
