//! `runbook check`: load and validate everything a run would, run nothing.

use super::{emit, say, sources};
use crate::cli::CheckArgs;
use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_core::runbook::Runbook;
use runbook_engine::BackendChoice;
use runbook_engine::backend::Backend;
use runbook_engine::runtime::{Runtime, default_cache_dir};

pub fn check(args: CheckArgs) -> Result<Exit> {
    let mut out = String::new();
    let runbook = Runbook::load(&args.runbook)?;
    if !runbook.is_executable() {
        say!(
            out,
            "{} {}: not executable (no `steps`); front matter is valid",
            runbook.runbook_id,
            runbook.title
        );
        emit(&out)?;
        return Ok(Exit::Ok);
    }
    let runtime = Runtime::new(default_cache_dir())?;
    let loading = crate::progress::spinner("loading and linking the plugins");
    let sources = sources(&args.sources, &args.runbook)?;
    let plan = runbook_engine::start::load_plan(&runtime, runbook, &sources)?;
    plan.link_all(&runtime)?;
    loading.finish_and_clear();
    if let Some(env) = &args.env {
        Backend::load(&BackendChoice::Live(env.clone()), None)?.check(&plan)?;
    }
    let approvers = args
        .approvers
        .clone()
        .or_else(|| std::env::var_os("RUNBOOK_APPROVERS").map(std::path::PathBuf::from));
    if let Some(path) = approvers {
        let approvers = runbook_core::approvers::Approvers::load(&path)?;
        for s in &plan.steps {
            if let Some(rule) = &s.def.approval {
                let at = format!("runbook `{}` step `{}`", args.runbook.display(), s.def.id);
                let hint =
                    "add people (or groups) to the approvers file, or ask for fewer approvals";
                let warning = approvers
                    .can_meet(rule)
                    .map_err(|why| hinted(format!("{at}: approval: {why}"), hint))?;
                if let Some(w) = warning {
                    eprintln!("warning: {at}: approval: {w}");
                    eprintln!("hint: {hint}");
                }
            }
        }
    }
    say!(
        out,
        "{} {}: {} steps, all valid",
        plan.runbook.runbook_id,
        plan.runbook.title,
        plan.steps.len()
    );
    // What the organisation's policies would say of each step's changes.
    let findings = match &sources.policies {
        Some(policies) => {
            let now = runbook_core::time::now_ms();
            runbook_engine::guard::step_facts(&plan)
                .iter()
                .zip(&plan.steps)
                .flat_map(|(facts, s)| policies.review(facts, &s.grants, now))
                .collect()
        }
        None => Vec::new(),
    };
    let mut warned = Vec::new();
    for s in &plan.steps {
        let limits = s.plugin.manifest.manifest.limits;
        if s.plugin.memory_at_start > u64::from(limits.memory_mib) << 20
            && !warned.contains(&s.plugin.name())
        {
            warned.push(s.plugin.name());
            eprintln!(
                "warning: plugin `{}` needs {} MiB of memory at start, but `limits.memory_mib` is {}: every step that runs it will end `limit-exceeded`",
                s.plugin.name(),
                s.plugin.memory_at_start.div_ceil(1 << 20),
                limits.memory_mib
            );
            eprintln!(
                "hint: raise `limits.memory_mib` in `{}`",
                s.plugin.manifest_path().display()
            );
        }
        say!(
            out,
            "  {} → {} (sha256 {}…, {} MiB, {} ms)",
            s.def.id,
            s.plugin.name(),
            &s.plugin.digest[..12],
            limits.memory_mib,
            limits.timeout_ms
        );
        for line in s.grants.describe() {
            say!(out, "      {line}");
        }
        if let Some(rule) = &s.def.approval {
            say!(out, "      approval: {}", rule.describe());
        }
        for f in findings.iter().filter(|f| f.step == s.def.id.as_str()) {
            say!(out, "      policy: {}", f.describe_for_step());
        }
        let routes: Vec<String> = s.def.on.iter().map(|(k, v)| format!("{k} → {v}")).collect();
        say!(out, "      routes: {}", routes.join(", "));
    }
    if let Some(policies) = &sources.policies {
        say!(
            out,
            "policies: `{}` ({} policies, {} calendars; {} findings)",
            policies.dir.display(),
            policies.sources.len(),
            policies.calendars.calendars.len(),
            findings.len()
        );
    }
    emit(&out)?;
    Ok(Exit::Ok)
}
