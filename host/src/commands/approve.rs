//! `runbook approve` and `runbook approver-token`: a person's decision on
//! the change a parked run waits for, and the tokens people are known by.

use super::emit;
use super::run::store_and_fleet_with;
use crate::cli::{ApproveArgs, ApproverTokenArgs};
use anyhow::{Context, Result};
use runbook_core::approval::{Choice, Tally};
use runbook_core::approvers::Approvers;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_engine::approvals::{Ballot, cast};
use std::path::PathBuf;

/// Where an approver's token is read from when no `--token-file` is given.
const TOKEN_VAR: &str = "RUNBOOK_APPROVER_TOKEN";
const APPROVERS_VAR: &str = "RUNBOOK_APPROVERS";

pub fn approve(args: ApproveArgs) -> Result<Exit> {
    let (store, fleet) = store_and_fleet_with(&args.state, args.replicas)?;
    let Some(person) = &args.person else {
        // No person: the fleet's approval of a step without a rule, as
        // before (a step with one refuses it when the run resumes).
        let Some(fleet) = fleet else {
            return Err(hinted(
                format!(
                    "approving step `{}` of a run in a state directory needs `--as PERSON` (a step with an `approval:` rule)",
                    args.step
                ),
                format!(
                    "a step without a rule is approved with `runbook resume {} --approve {}`",
                    args.run_id, args.step
                ),
            ));
        };
        runbook_fleet::parked::approve(&*store, &fleet, &args.run_id, &args.step)?;
        emit(&format!(
            "approved step `{}` of run {}: a worker continues it (`runbook show {} --nats URL`)\n",
            args.step, args.run_id, args.run_id
        ))?;
        return Ok(Exit::Ok);
    };
    let approvers_path = args
        .approvers
        .clone()
        .or_else(|| std::env::var_os(APPROVERS_VAR).map(PathBuf::from))
        .ok_or_else(|| {
            hinted(
                "no approvers file: pass `--approvers FILE` or set `RUNBOOK_APPROVERS`",
                "the approvers file lists people, their groups and their token hashes; see runbooks/README.md (Approvals)",
            )
        })?;
    let approvers = Approvers::load(&approvers_path)?;
    let token = token(&args)?;
    let person = approvers.authenticate(person, &token)?;
    let ballot = Ballot {
        run_id: args.run_id.clone(),
        step: args.step.clone(),
        choice: if args.deny {
            Choice::Deny
        } else {
            Choice::Approve
        },
        intent: args.intent.clone(),
        how: "token".into(),
        from: runbook_core::whoami::hostname(),
    };
    let recorded = cast(&*store, person, &ballot)?;
    let (run, step) = (&args.run_id, &args.step);
    let change = &recorded.pending.change;
    let verb = if args.deny { "denied" } else { "approved" };
    let mut out = format!(
        "{} {verb} step `{step}` of run {run}: {change} ({})\n",
        person.name, recorded.pending.intent
    );
    match &recorded.tally {
        Tally::Waiting { have, need } => out.push_str(&format!(
            "{} of {need} approvals ({}); the run waits for {} more: {}\n",
            have.len(),
            have.join(", "),
            *need as usize - have.len(),
            recorded.rule.describe()
        )),
        decided => {
            let by = match decided {
                Tally::Approved(by) => by.join(", "),
                Tally::Denied(by) => by.clone(),
                Tally::Waiting { .. } => unreachable!("matched above"),
            };
            match &fleet {
                Some(fleet) => {
                    match runbook_fleet::parked::queue_resume(
                        fleet,
                        run,
                        step,
                        by,
                        &recorded.pending.intent,
                    ) {
                        Ok(_) => out.push_str(&format!(
                            "decided: a worker continues the run (`runbook show {run} --nats URL`)\n"
                        )),
                        // The decision is recorded either way.
                        Err(e) => out.push_str(&format!(
                            "decided, but the run could not be queued for a worker ({e:#}): a worker's sweep queues it at its deadline, or `runbook resume {run} --nats URL` continues it now\n"
                        )),
                    }
                }
                None => out.push_str(&format!(
                    "decided: `runbook resume {run}` continues the run\n"
                )),
            }
        }
    }
    emit(&out)?;
    Ok(Exit::Ok)
}

/// The approver's token: `--token-file`, else `RUNBOOK_APPROVER_TOKEN`.
fn token(args: &ApproveArgs) -> Result<String> {
    let token = match &args.token_file {
        Some(path) => runbook_core::files::read_text_capped(path, "token file", 4096)?,
        None => std::env::var(TOKEN_VAR).map_err(|_| {
            hinted(
                format!("no token for `{}`: `{TOKEN_VAR}` is not set", args.person.as_deref().unwrap_or_default()),
                "export your token in `RUNBOOK_APPROVER_TOKEN` (or pass `--token-file FILE`); `runbook approver-token NAME` makes one",
            )
        })?,
    };
    Ok(token.trim().to_string())
}

/// `runbook approver-token NAME`: a new token and its approvers-file
/// entry. The token is printed once (to be handed to the person); only
/// its hash goes in the file.
pub fn approver_token(args: ApproverTokenArgs) -> Result<Exit> {
    runbook_core::ids::Name::parse(&args.person).map_err(|why| {
        hinted(
            format!("person name `{}`: {why}", args.person),
            "names are kebab-case, like `alice` or `sre-oncall-1`",
        )
    })?;
    let (token, hash) = runbook_core::approvers::new_token().context("making a token")?;
    emit(&format!(
        "# the token for `{}`: give it to them (it is not kept anywhere)\n# {token}\n# the entry for the approvers file:\n[people.{}]\ntoken = \"{hash}\"\ngroups = []\n",
        args.person, args.person
    ))?;
    Ok(Exit::Ok)
}
