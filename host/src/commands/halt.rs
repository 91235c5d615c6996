//! `runbook halt` and `runbook resume-all`: the kill switch of every run
//! that shares a store (`runbook_journal::halt`).

use super::emit;
use super::run::store_and_fleet;
use crate::cli::{HaltArgs, ResumeAllArgs, ResumeArgs, StateArgs};
use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_journal::halt::{self, Halts, Scope};

pub fn halt(args: HaltArgs) -> Result<Exit> {
    let scope = match (&args.runbook, args.all) {
        (Some(id), _) => Some(Scope::Runbook(checked_id(id)?)),
        (None, true) => Some(Scope::All),
        (None, false) => None,
    };
    if scope.is_none() && args.reason.is_some() {
        return Err(hinted(
            "`--reason` without `--all` or `--runbook ID`: nothing to halt",
            "`runbook halt --all --reason TEXT` halts every runbook; `runbook halt` alone shows the halts",
        ));
    }
    let (store, fleet) = store_and_fleet(&args.state)?;
    let mut fresh = false;
    let halts = match &scope {
        None => halt::read(&*store)?,
        Some(scope) => {
            let who = halt::now(args.reason.as_deref().unwrap_or_default());
            halt::change(&*store, &mut |h| {
                fresh = h.halt(scope, who.clone());
                fresh
            })?
        }
    };
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&halts)?))?;
        return Ok(Exit::Ok);
    }
    let mut out = String::new();
    let place = place(&args.state, fleet.is_some());
    match &scope {
        None if halts.all.is_none() && halts.runbooks.is_empty() => out.push_str(&format!(
            "nothing halted now in {place} (`--all` or `--runbook ID` halts)\n"
        )),
        None => {}
        Some(scope) if !fresh => {
            let since = halts
                .halted(scope)
                .map(|h| h.describe())
                .unwrap_or_default();
            out.push_str(&format!(
                "already halted in {place}, {since}: that halt stands (`runbook halt --json` has the record)\n"
            ));
        }
        Some(_) => out.push_str(&format!(
            "halted in {place}: every run there stops before its next change to a system\n"
        )),
    }
    out.push_str(&describe(&halts));
    emit(&out)?;
    Ok(Exit::Ok)
}

/// Where the halts are, for people: the state directory or the fleet.
fn place(state: &StateArgs, fleet: bool) -> String {
    if fleet {
        return "the fleet's NATS".to_string();
    }
    match state
        .state_dir
        .clone()
        .or_else(runbook_journal::store::default_state_dir)
    {
        Some(d) => format!("the state directory `{}`", d.display()),
        None => "the state directory".to_string(),
    }
}

pub async fn resume_all(args: ResumeAllArgs) -> Result<Exit> {
    let (store, fleet) = store_and_fleet(&args.state)?;
    let scope = match &args.runbook {
        Some(id) => Some(Scope::Runbook(checked_id(id)?)),
        None => None,
    };
    let who = halt::now(args.reason.as_deref().unwrap_or_default());
    // Each pass decides on what it read; the runs it frees stay listed
    // until each is continued, so a lost answer or a stop half-way loses
    // none (the next `resume-all` finds them).
    let mut freed = Vec::new();
    // What was halted before: (anything, the scope itself).
    let mut before = (false, false);
    let halts = halt::change(&*store, &mut |h| {
        before = (
            h.all.is_some() || !h.runbooks.is_empty(),
            scope.as_ref().is_none_or(|s| h.halted(s).is_some()),
        );
        let records = h.record.len();
        freed = h.lift(scope.as_ref(), who.clone());
        // Lifted nothing, freed nothing: nothing written, nothing recorded.
        h.record.len() != records
    })?;
    let place = place(&args.state, fleet.is_some());
    let mut out = match (&scope, &before) {
        (None, (false, _)) => format!("nothing was halted in {place}\n"),
        (None, _) => format!("lifted every halt in {place}\n"),
        (Some(Scope::Runbook(id)), (_, false)) => {
            format!("`{id}` had no halt of its own in {place}\n")
        }
        (Some(Scope::Runbook(id)), _) => format!("lifted the halt of `{id}` in {place}\n"),
        (Some(Scope::All), _) => unreachable!("resume-all lifts every halt or one runbook's"),
    };
    if let (Some(Scope::Runbook(_)), Some(all)) = (&scope, &halts.all) {
        out.push_str(&format!(
            "every runbook is still halted ({}): `runbook resume-all` lifts that\n",
            all.describe()
        ));
    }
    out.push_str(&describe(&halts));
    if freed.is_empty() {
        out.push_str("no stopped run to continue\n");
    }
    let on_store = match (&fleet, &args.state.state_dir) {
        (Some(_), _) => " --nats URL".to_string(),
        (None, Some(d)) => format!(" --state-dir {}", d.display()),
        (None, None) => String::new(),
    };
    if args.lift_only {
        for (run_id, s) in &freed {
            out.push_str(&format!(
                "run {run_id} ({}, incident `{}`, stopped at `{}`): continue it with `runbook resume {run_id}{}{on_store}`\n",
                s.runbook,
                s.incident,
                s.step,
                approvals_flags(&*store, run_id)
            ));
        }
        emit(&out)?;
        return Ok(Exit::Ok);
    }
    if let Some(fleet) = fleet {
        let failed = runbook_fleet::halted::continue_runs(&fleet, &freed, &who.by, who.at_ms);
        let queued: Vec<(String, u64)> = freed
            .iter()
            .filter(|(id, _)| !failed.iter().any(|(f, _)| f == id))
            .map(|(id, s)| (id.clone(), s.at_ms))
            .collect();
        release(&*store, &queued)?;
        for (run_id, s) in &freed {
            match failed.iter().find(|(id, _)| id == run_id) {
                None => out.push_str(&format!(
                    "run {run_id} ({}, incident `{}`): queued for the fleet's workers\n",
                    s.runbook, s.incident
                )),
                Some((_, why)) => out.push_str(&format!(
                    "run {run_id} could not be queued ({why}); it stays listed: `runbook resume-all --nats URL` again\n"
                )),
            }
        }
        emit(&out)?;
        return Ok(if failed.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }
    emit(&out)?;
    // A state directory's runs are continued here, one after another,
    // with what each was started with.
    let mut worst = Exit::Ok;
    for (run_id, stopped) in &freed {
        let submitted = submitted(&*store, run_id);
        let resumed = super::run::resume(ResumeArgs {
            run_id: run_id.clone(),
            yes: submitted["yes"] == true,
            approve: submitted["approve"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            json: false,
            audit_log: None,
            state: StateArgs {
                state_dir: args.state.state_dir.clone(),
                nats: None,
            },
        })
        .await;
        match resumed {
            Ok(exit) => {
                // Continued (whatever became of it): off the list, unless
                // a halt stopped it again meanwhile.
                release(&*store, &[(run_id.clone(), stopped.at_ms)])?;
                if worst == Exit::Ok {
                    worst = exit;
                }
            }
            Err(e) => {
                eprintln!("error: continuing run {run_id}: {e:#}");
                eprintln!(
                    "hint: it stays listed; continue it with `runbook resume {run_id}{}` (or `runbook resume-all` again)",
                    approvals_flags(&*store, run_id)
                );
                worst = Exit::Failed;
            }
        }
    }
    Ok(worst)
}

/// Takes continued runs off the halts' list of stopped runs.
fn release(store: &dyn runbook_journal::store::Store, runs: &[(String, u64)]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    halt::change(store, &mut |h| {
        let mut any = false;
        for (id, at) in runs {
            any |= h.release(id, *at);
        }
        any
    })?;
    Ok(())
}

/// What a run was started with (`run-start`'s `policy`: `yes`, `approve`).
fn submitted(store: &dyn runbook_journal::store::Store, run_id: &str) -> serde_json::Value {
    store
        .read_run(run_id)
        .ok()
        .and_then(|lines| {
            lines
                .iter()
                .find(|l| l["event"] == "run-start")
                .map(|s| s["policy"].clone())
        })
        .unwrap_or_default()
}

/// ` --yes`, ` --approve STEP`...: what `runbook resume` needs to go on
/// as the run was started.
fn approvals_flags(store: &dyn runbook_journal::store::Store, run_id: &str) -> String {
    let s = submitted(store, run_id);
    let mut flags = String::new();
    if s["yes"] == true {
        flags.push_str(" --yes");
    }
    for step in s["approve"].as_array().into_iter().flatten() {
        if let Some(step) = step.as_str() {
            flags.push_str(&format!(" --approve {step}"));
        }
    }
    flags
}

/// A runbook id as runbooks write it.
fn checked_id(id: &str) -> Result<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(hinted(
            format!("`{id}` is not a runbook id"),
            "a runbook's id is its front matter's `runbook_id` (`RB-0031`); `--all` halts every runbook",
        ))
    }
}

/// The halts in force and the runs they stopped, for people.
fn describe(h: &Halts) -> String {
    let mut out = String::new();
    if let Some(all) = &h.all {
        out.push_str(&format!("HALTED: every runbook, {}\n", all.describe()));
    }
    for (id, halt) in &h.runbooks {
        out.push_str(&format!("HALTED: `{id}`, {}\n", halt.describe()));
    }
    if !h.stopped.is_empty() {
        out.push_str(&format!("runs stopped by a halt: {}\n", h.stopped.len()));
        for (run_id, s) in &h.stopped {
            out.push_str(&format!(
                "  {run_id}: {}, incident `{}`, before a change of step `{}` at {}\n",
                s.runbook,
                s.incident,
                s.step,
                runbook_core::time::rfc3339(s.at_ms)
            ));
        }
    }
    out
}
