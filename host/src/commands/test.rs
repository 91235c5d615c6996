//! `runbook test`: a runbook against its scenarios, each checked against
//! the scenario's `[expect]`; and `runbook step`: one plugin run alone.

use super::{emit, say, sources};
use crate::cli::{StepArgs, TestArgs};
use anyhow::Result;
use runbook_capabilities::scenario::Scenario;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_core::ids::Name;
use runbook_core::runbook::{Runbook, StepDef};
use runbook_engine::Engine;
use runbook_engine::backend::Backend;
use runbook_engine::runtime::{Runtime, default_cache_dir};
use runbook_engine::start::Prepared;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn test(args: TestArgs) -> Result<Exit> {
    let runbook = Runbook::load(&args.runbook)?;
    let scenarios = match args.scenarios.is_empty() {
        false => args.scenarios.clone(),
        true => beside(&args.runbook)?,
    };
    let engine = Engine::new(Runtime::new(default_cache_dir())?, None);
    let plan = Arc::new(engine.plan(runbook, &sources(&args.sources, &args.runbook)?)?);
    let mut out = String::new();
    let mut results = Vec::new();
    let mut failed = 0;
    let progress = crate::progress::bar(scenarios.len() as u64, "scenarios");
    for path in &scenarios {
        progress.inc(1);
        let scenario = Scenario::load(path)?;
        let Some(expect) = scenario.expect.clone() else {
            return Err(hinted(
                format!("scenario `{}` has no `[expect]`", path.display()),
                "add `[expect]` with `status` and `path` (see runbooks/README.md), or leave the scenario out",
            ));
        };
        let prepared = Prepared::new(
            plan.clone(),
            Backend::Sim {
                scenario,
                path: path.clone(),
            },
        )?;
        let report = engine.run_prepared(&prepared, "test").await?;
        let e = runbook_engine::expect::check(&expect, &report);
        let name = path.display();
        if e.met {
            say!(out, "ok    {name}: {} via {}", e.status, e.path.join(" → "));
        } else {
            failed += 1;
            say!(out, "FAIL  {name}:");
            for d in &e.differences {
                say!(out, "        {d}");
            }
            for s in &report.steps {
                say!(out, "        {} → `{}`: {}", s.id, s.outcome, s.summary);
                // A trap's own words are in the guest's stderr.
                let tail: Vec<&str> = s.stderr.lines().rev().take(3).collect();
                for line in tail.into_iter().rev() {
                    say!(out, "          stderr: {line}");
                }
            }
        }
        results.push(serde_json::json!({
            "scenario": path,
            "expectation": e,
            "status": report.status,
            "path": report.path(),
        }));
    }
    progress.finish_and_clear();
    let passed = scenarios.len() - failed;
    if args.json {
        out = format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "runbook": args.runbook,
                "passed": passed,
                "failed": failed,
                "scenarios": results,
            }))?
        );
    } else {
        say!(
            out,
            "{passed} of {} scenarios took their expected path",
            scenarios.len()
        );
    }
    emit(&out)?;
    Ok(if failed == 0 {
        Exit::Ok
    } else {
        Exit::Unexpected
    })
}

/// The scenarios with an `[expect]` in `scenarios/` beside the runbook.
fn beside(runbook: &Path) -> Result<Vec<PathBuf>> {
    let dir = runbook.parent().unwrap_or(Path::new(".")).join("scenarios");
    let mut found = Vec::new();
    if dir.is_dir() {
        let mut all: Vec<PathBuf> = fs_err::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        all.sort();
        for p in all {
            // One that does not load is an error, never a scenario left out.
            if Scenario::load(&p)?.expect.is_some() {
                found.push(p);
            } else {
                eprintln!(
                    "note: scenario `{}` has no `[expect]`; not tested",
                    p.display()
                );
            }
        }
    }
    if found.is_empty() {
        return Err(hinted(
            format!("no scenario with an `[expect]` in `{}`", dir.display()),
            "add a scenario with an `[expect]` there (`status`, and `path` as step ids, each optionally `step:outcome`), or name scenarios with `--sim`",
        ));
    }
    Ok(found)
}

/// `runbook step`: one plugin, alone, against a simulated scenario.
pub async fn step(args: StepArgs) -> Result<Exit> {
    let name = Name::parse(&args.plugin).map_err(|why| {
        hinted(
            format!("`{}` is not a plugin name: {why}", args.plugin),
            "`runbook plugins` lists the plugins",
        )
    })?;
    let mut inputs = BTreeMap::new();
    for kv in &args.input {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(hinted(
                format!("`--input {kv}` is not `KEY=VALUE`"),
                "write each input as `--input key=value`",
            ));
        };
        inputs.insert(
            k.trim().to_string(),
            serde_yaml_ng::Value::String(v.to_string()),
        );
    }
    let search = super::search(&args.search, None)?;
    let engine = Engine::new(Runtime::new(default_cache_dir())?, None);
    // The manifest's grant as the step's own, and every declared outcome
    // ends the run: the step is all there is.
    let loaded = match search.locate(&name)? {
        runbook_engine::sources::Located::Builtin(b) => b.manifest()?,
        runbook_engine::sources::Located::Manifest(path) => {
            runbook_core::manifest::LoadedManifest::load(&path)?
        }
    };
    let manifest = &loaded.manifest;
    let mut on: BTreeMap<String, String> = manifest
        .outcomes
        .iter()
        .flatten()
        .map(|o| (o.to_string(), runbook_core::runbook::RESOLVED.to_string()))
        .collect();
    for host in [
        runbook_core::runbook::LABEL_ERROR,
        runbook_core::runbook::LABEL_LIMIT,
    ] {
        on.insert(host.into(), runbook_core::runbook::ESCALATED.into());
    }
    let def = StepDef {
        id: name.clone(),
        plugin: name.clone(),
        description: None,
        inputs,
        grants: Some(manifest.grants.clone()),
        on,
        approval: None,
    };
    let runbook = Runbook {
        runbook_id: format!("step {name}"),
        title: format!("plugin `{name}` alone"),
        service: String::new(),
        severity_scope: String::new(),
        tags: Vec::new(),
        first_action_step: String::new(),
        escalation: None,
        steps: vec![def],
        max_mutations: runbook_core::runbook::DEFAULT_MAX_MUTATIONS,
        path: PathBuf::from(format!("<runbook step {name}>")),
    };
    let plan = engine.plan(runbook, &search)?;
    let prepared = Prepared::new(
        Arc::new(plan),
        Backend::Sim {
            scenario: Scenario::load(&args.sim)?,
            path: args.sim.clone(),
        },
    )?;
    let report = engine.run_prepared(&prepared, "step").await?;
    let s = report.steps.first();
    let mut out = String::new();
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&s)?);
    } else if let Some(s) = s {
        out.push_str(&runbook_engine::report::render_step(s));
    }
    emit(&out)?;
    Ok(match s {
        Some(s)
            if manifest.returns(&s.outcome)
                && s.outcome != runbook_core::runbook::LABEL_ERROR
                && s.outcome != runbook_core::runbook::LABEL_LIMIT =>
        {
            Exit::Ok
        }
        _ => Exit::Failed,
    })
}
