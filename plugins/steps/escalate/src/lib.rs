//! Escalation that pages. `mode = "escalate"` (the default): pages `page`
//! with the run's summary (each earlier step's outcome and summary) and a
//! link to its timeline, posts to `channel`, and pages `security` too when
//! an earlier step reported fact `security_fact` (default
//! `signing_keys_suspect`) as `true`; outcome `paged`. `mode = "resolved"`:
//! posts the run's outcome to `channel`; outcome `posted`. The page's dedup
//! key is `dedup_key` (default: the incident key), so a resumed run, or
//! another run of the same incident, is the same page.

use runbook_sdk::notify::Severity;
use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, history, notify, outcome};

struct Escalate;

fn severity(raw: &str) -> Result<Severity, Error> {
    Ok(match raw {
        "critical" => Severity::Critical,
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        "info" => Severity::Info,
        other => {
            return Err(Error::Invalid(format!(
                "input `severity` must be critical, error, warning or info, not `{other}`"
            )));
        }
    })
}

impl Step for Escalate {
    fn run(ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let runbook = inputs.opt("runbook").unwrap_or("the runbook");
        let channel = inputs.str("channel")?;
        let timeline = inputs
            .opt("timeline_url")
            .map(|t| t.replace("{run_id}", &ctx.run_id))
            .unwrap_or_else(|| format!("`runbook show {}`", ctx.run_id));
        let steps = history::steps();
        let story: Vec<String> = steps
            .iter()
            .map(|s| format!("{} {}: {}", s.step_id, s.outcome, s.summary))
            .collect();
        if inputs.opt("mode").unwrap_or("escalate") == "resolved" {
            let text = format!(
                "{runbook} resolved (run {}). {}. Timeline: {timeline}",
                ctx.run_id,
                story.join("; ")
            );
            let sent = notify::message(channel, &text)?;
            return outcome("posted")
                .fact("channel", &sent.to)
                .summary(format!("posted the outcome to `{channel}`"));
        }
        let page = inputs.str("page")?;
        let severity = severity(inputs.opt("severity").unwrap_or("critical"))?;
        let dedup = inputs.opt("dedup_key").unwrap_or(&ctx.incident).to_string();
        // PagerDuty keeps 1024 characters of a summary.
        let mut summary = format!(
            "{runbook} escalated (run {}): {}",
            ctx.run_id,
            story.join("; ")
        );
        if summary.len() > 1000 {
            let mut end = 1000;
            while !summary.is_char_boundary(end) {
                end -= 1;
            }
            summary.truncate(end);
            summary.push('…');
        }
        let paged = notify::page(page, &summary, severity, &dedup)?;
        let text = format!(
            "Paged `{page}` ({}). {runbook}: {}. Timeline: {timeline}",
            paged.status,
            story.join("; ")
        );
        notify::message(channel, &text)?;
        let fact = inputs
            .opt("security_fact")
            .unwrap_or("signing_keys_suspect");
        let suspect = steps
            .iter()
            .flat_map(|s| s.facts.iter())
            .any(|f| f.key == fact && f.value == "true");
        let mut paged_security = false;
        if suspect && let Some(security) = inputs.opt("security") {
            let text = format!(
                "{runbook}: token signing keys may be compromised (run {}). {}",
                ctx.run_id,
                story.join("; ")
            );
            notify::page(
                security,
                &text,
                Severity::Critical,
                &format!("{dedup}-security"),
            )?;
            paged_security = true;
        }
        outcome("paged")
            .fact("page", page)
            .fact("status", &paged.status)
            .fact("security", paged_security)
            .summary(format!(
                "paged `{page}` ({}), told `{channel}`{}",
                paged.status,
                if paged_security {
                    ", and paged security: signing keys may be involved"
                } else {
                    ""
                }
            ))
    }
}

runbook_sdk::export_step!(Escalate);
