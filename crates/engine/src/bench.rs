//! Many runs of one runbook in one process, against the simulated
//! backends, on one engine: what `runbook bench` measures (steps/s,
//! runs/s, the cost of a step, peak memory).

use crate::api::Engine;
use crate::start::Prepared;
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One run's status, its steps' (wall, busy) µs, its µs, whether it met
/// the scenario's `[expect]`.
type Ended = (String, Vec<(u64, u64)>, u64, Option<bool>);

/// What many runs took.
#[derive(Debug)]
pub struct Bench {
    pub runs: usize,
    pub steps: usize,
    pub wall: Duration,
    /// Each step's wall time (wait for an instance slot excluded:
    /// instantiate, call, teardown, and the waits for a thread in
    /// between), microseconds, sorted.
    pub step_us: Vec<u64>,
    /// Each step's time on a thread (`StepReport::busy_us`), sorted.
    pub step_busy_us: Vec<u64>,
    /// Each run's wall time from start to report, microseconds, sorted.
    pub run_us: Vec<u64>,
    /// How the runs ended: status → count.
    pub statuses: BTreeMap<String, usize>,
    /// Runs that took the scenario's `[expect]`ed path and status, when
    /// it has one about this runbook (`None`: nothing to check against).
    /// A benchmark whose runs went elsewhere did not time the work it
    /// names: `runbook bench` fails then.
    pub met_expect: Option<usize>,
}

impl Bench {
    fn add(&mut self, (status, steps, run_us, met): Ended) {
        *self.statuses.entry(status).or_default() += 1;
        if let Some(met) = met {
            *self.met_expect.get_or_insert(0) += usize::from(met);
        }
        self.steps += steps.len();
        self.step_us.extend(steps.iter().map(|s| s.0));
        self.step_busy_us.extend(steps.iter().map(|s| s.1));
        self.run_us.push(run_us);
    }

    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.wall.as_secs_f64()
    }

    pub fn runs_per_second(&self) -> f64 {
        self.runs as f64 / self.wall.as_secs_f64()
    }

    /// The `p`th percentile (0..=100) of sorted `values`.
    pub fn percentile(values: &[u64], p: f64) -> u64 {
        if values.is_empty() {
            return 0;
        }
        let i = ((values.len() - 1) as f64 * p / 100.0).round() as usize;
        values[i.min(values.len() - 1)]
    }
}

/// Executes `runs` runs of a prepared plan, at most `concurrency` in
/// flight at once, each against fresh backends (a new simulated world);
/// `ended` is told as each run ends. Call it on a multi-threaded tokio
/// runtime to use every core.
pub async fn many(
    engine: &Engine,
    prepared: Arc<Prepared>,
    runs: usize,
    concurrency: usize,
    ended: impl Fn(),
) -> Result<Bench> {
    // Checked once: every run builds the same world.
    prepared.backend.backends(&prepared.plan).await?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut bench = Bench {
        runs,
        steps: 0,
        wall: Duration::ZERO,
        step_us: Vec::new(),
        step_busy_us: Vec::new(),
        run_us: Vec::with_capacity(runs),
        statuses: BTreeMap::new(),
        met_expect: None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..runs {
        // Collect what has finished as we go: memory stays bounded by the
        // runs in flight, not the runs done.
        while let Some(done) = tasks.try_join_next() {
            bench.add(done??);
            ended();
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let (engine, prepared) = (engine.clone(), prepared.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let run_started = Instant::now();
            let report = engine
                .run_prepared(&prepared, &format!("bench-{i}"))
                .await?;
            let steps: Vec<(u64, u64)> = report
                .steps
                .iter()
                .map(|s| (s.wall_us, s.busy_us))
                .collect();
            let status = serde_json::to_value(report.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let run_us = run_started.elapsed().as_micros() as u64;
            let met = crate::api::expectation(&prepared, &report).0.map(|e| e.met);
            anyhow::Ok((status, steps, run_us, met))
        });
    }
    while let Some(done) = tasks.join_next().await {
        bench.add(done??);
        ended();
    }
    bench.wall = started.elapsed();
    bench.step_us.sort_unstable();
    bench.step_busy_us.sort_unstable();
    bench.run_us.sort_unstable();
    Ok(bench)
}

/// This process's peak resident set, in KiB (`VmHWM`), where Linux says.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
