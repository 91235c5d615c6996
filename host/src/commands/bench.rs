//! `runbook bench`: many runs in one process, measured.

use super::{emit, say, sources};
use crate::cli::BenchArgs;
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_engine::Engine;
use runbook_engine::bench::{Bench, many, peak_rss_kib};
use runbook_engine::runtime::{Runtime, default_cache_dir};
use std::sync::Arc;

pub async fn bench(args: BenchArgs) -> Result<Exit> {
    // With an OTLP endpoint set, every run is traced: the cost of
    // tracing is this bench with and without one.
    let tracing = super::traces::from_env().await?;
    let engine = Engine::new(
        Runtime::with_instances(default_cache_dir(), args.instances)?,
        None,
    )
    .with_tracing(tracing.clone());
    let prepared = engine.prepare(
        &args.runbook,
        &args.sim,
        &sources(&args.sources, &args.runbook)?,
    )?;
    let progress = crate::progress::bar(args.runs as u64, "runs");
    let b = many(
        &engine,
        Arc::new(prepared),
        args.runs,
        args.concurrency,
        || progress.inc(1),
    )
    .await;
    progress.finish();
    let tracing_on = tracing.is_some();
    // Before anything else can end the command: the last spans are sent
    // off the async threads.
    super::traces::shutdown(tracing).await;
    let b = b?;
    let rss_mib = peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let p = |v: &[u64], q| Bench::percentile(v, q);
    let mut out = String::new();
    if args.json {
        say!(
            out,
            "{}",
            serde_json::json!({
                "runs": b.runs,
                "traced": tracing_on,
                "steps": b.steps,
                "concurrency": args.concurrency,
                "wall_s": b.wall.as_secs_f64(),
                "steps_per_s": b.steps_per_second(),
                "runs_per_s": b.runs_per_second(),
                "step_us_p50": p(&b.step_us, 50.0),
                "step_us_p99": p(&b.step_us, 99.0),
                "step_busy_us_p50": p(&b.step_busy_us, 50.0),
                "step_busy_us_p99": p(&b.step_busy_us, 99.0),
                "run_ms_p50": p(&b.run_us, 50.0) as f64 / 1000.0,
                "run_ms_p99": p(&b.run_us, 99.0) as f64 / 1000.0,
                "peak_rss_mib": rss_mib,
                "statuses": b.statuses,
                "met_expect": b.met_expect,
            })
        );
    } else {
        say!(
            out,
            "{} runs ({} steps), {} in flight, in {:.3} s",
            b.runs,
            b.steps,
            args.concurrency,
            b.wall.as_secs_f64()
        );
        say!(out, "  steps/s      {:>12.0}", b.steps_per_second());
        say!(out, "  runs/s       {:>12.0}", b.runs_per_second());
        say!(
            out,
            "  step         p50 {} µs, p99 {} µs on a thread (setup, instantiate, call, teardown)",
            p(&b.step_busy_us, 50.0),
            p(&b.step_busy_us, 99.0)
        );
        say!(
            out,
            "  step wall    p50 {} µs, p99 {} µs (the same, and its waits for a thread)",
            p(&b.step_us, 50.0),
            p(&b.step_us, 99.0)
        );
        say!(
            out,
            "  run          p50 {:.1} ms, p99 {:.1} ms (start to report)",
            p(&b.run_us, 50.0) as f64 / 1000.0,
            p(&b.run_us, 99.0) as f64 / 1000.0
        );
        say!(out, "  peak RSS     {rss_mib:.0} MiB");
        let statuses: Vec<String> = b.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        say!(out, "  ended        {}", statuses.join(", "));
        match b.met_expect {
            Some(met) => say!(
                out,
                "  as expected  {met} of {} runs took the scenario's [expect]ed path",
                b.runs
            ),
            None => say!(
                out,
                "  as expected  unchecked: the scenario has no [expect] about this runbook"
            ),
        }
    }
    emit(&out)?;
    // Figures of runs that went elsewhere (an error route, a refusal) are
    // not figures of the work the scenario names.
    if let Some(met) = b.met_expect
        && met != b.runs
    {
        eprintln!(
            "error: {} of {} runs did not take the scenario's [expect]ed path: these figures are not of the work it names\nhint: see where a run goes with `runbook run {} --sim {}`",
            b.runs - met,
            b.runs,
            args.runbook.display(),
            args.sim.display()
        );
        return Ok(Exit::Unexpected);
    }
    Ok(Exit::Ok)
}
