//! The console's HTML: the run list, a run's page and the sign-in page.
//! maud escapes every value written into a page; no page carries a
//! secret (a session's CSRF token, which is the person's own, aside).
//! Plain forms and links, labelled, usable by keyboard and on a phone;
//! the one script (`/console.js`) only reloads a run's page when its
//! journal grows.

use crate::auth::Session;
use crate::runs::{Detail, Filter, Parked, RunLine, STATUSES};
use maud::{DOCTYPE, Markup, html};
use runbook_core::approval::{Choice, Tally};

/// Who is looking, for the header: their session, if signed in.
pub struct Viewer<'a> {
    pub session: Option<&'a Session>,
}

fn page(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · runbook" }
                link rel="stylesheet" href="/console.css";
                script src="/console.js" defer {}
            }
            body {
                header {
                    a href="/" class="brand" { "runbook" }
                    nav aria-label="account" {
                        @if let Some(s) = viewer.session {
                            span class="who" { "signed in as " strong { (s.person) } }
                            @if s.how == "token" {
                                form method="post" action="/logout" class="inline" {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button type="submit" { "Sign out" }
                                }
                            }
                        } @else {
                            a href="/login" { "Sign in" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "resolved" => "ok",
        "awaiting-approval" | "halted" | "running" => "wait",
        "escalated" | "failed" | "blocked" | "stopped" => "bad",
        _ => "",
    }
}

/// The run list with its filters.
pub fn list(viewer: &Viewer, filter: &Filter, runs: &[RunLine]) -> Markup {
    page(
        "Runs",
        viewer,
        html! {
            h1 { "Runs" }
            form method="get" action="/" class="filters" role="search" {
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" selected[filter.status.is_empty()] { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[filter.status == *s] { (s) }
                    }
                }
                label for="runbook" { "Runbook" }
                input id="runbook" name="runbook" value=(filter.runbook) placeholder="RB-0031";
                label for="incident" { "Incident" }
                input id="incident" name="incident" value=(filter.incident);
                label for="hours" { "Started within (hours, 0: any)" }
                input id="hours" name="hours" type="number" min="0" value=(filter.hours);
                button type="submit" { "Filter" }
            }
            @if runs.is_empty() {
                p { "No runs match." }
            } @else {
                table class="runs" {
                    caption { (runs.len()) " runs, newest first" }
                    thead { tr { th scope="col" { "Run" } th scope="col" { "Runbook" } th scope="col" { "Incident" } th scope="col" { "Status" } th scope="col" { "Started" } } }
                    tbody {
                        @for r in runs {
                            tr {
                                td { a href={ "/runs/" (r.run_id) } { (r.run_id) } }
                                td { (r.runbook) " " span class="muted" { (r.title) } }
                                td { (r.incident) }
                                td {
                                    span class={ "status " (status_class(&r.status)) } { (r.status) }
                                    @if let Some((step, change)) = &r.waits_for {
                                        div class="muted" { "step " code { (step) } ": " (change) }
                                    }
                                }
                                td { time { (r.started) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A run's page: what happened, step by step, and the change it waits for.
pub fn run(viewer: &Viewer, d: &Detail, said: Option<&str>) -> Markup {
    let r = &d.report;
    page(
        &format!("Run {}", r.run_id),
        viewer,
        html! {
            h1 { (r.runbook_id) " " (r.title) }
            p {
                "Run " code { (r.run_id) } " · incident " code { (d.line.incident) } " · "
                span class={ "status " (status_class(&d.line.status)) } id="status" { (d.line.status) }
            }
            @if let Some(said) = said {
                p class="said" role="status" { (said) }
            }
            @if let Some(reason) = &r.reason {
                p class="reason" { (reason) }
            }
            @if let Some(p) = &d.parked {
                (parked(viewer, &r.run_id, p))
            }
            h2 { "Timeline" }
            ol class="timeline" id="timeline" data-run=(r.run_id) data-lines=(d.lines) aria-live="polite" {
                @for s in &r.steps {
                    li {
                        details open[s.awaiting_approval.is_some() || s.outcome == "error"] {
                            summary {
                                strong { (s.id) } " → " span class="outcome" { (s.outcome) }
                                " " span class="muted" { (s.summary) }
                            }
                            p class="muted" { "plugin " code { (s.plugin) } " sha256 " code { (short(&s.plugin_digest)) } " · started " (s.started_at) " · " (s.wall_us / 1000) " ms" }
                            @if !s.facts.is_empty() {
                                dl {
                                    @for (k, v) in &s.facts { dt { (k) } dd { (v) } }
                                }
                            }
                            @if !s.calls.is_empty() {
                                table class="calls" {
                                    caption { "Calls" }
                                    thead { tr { th scope="col" { "Call" } th scope="col" { "Resource" } th scope="col" { "Result" } } }
                                    tbody {
                                        @for c in &s.calls {
                                            tr {
                                                td { code { (c.interface.wit_name()) "." (c.operation) } }
                                                td { code { (c.resource) } }
                                                td {
                                                    @if let Some(e) = &c.error { span class="bad" { (e) } " " }
                                                    @if let Some(a) = &c.approval {
                                                        span class="muted" { (verdict(a.decision)) @if let Some(by) = &a.by { " by " (by) } " · " }
                                                    }
                                                    (compact(&c.result))
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !d.votes.is_empty() {
                h2 { "Decisions" }
                ul class="votes" {
                    @for v in &d.votes {
                        li {
                            (v.by) " " (choice(v.decision)) " step " code { (v.step) }
                            " at " (runbook_core::time::rfc3339(v.at_ms)) " (" (v.how) ", from " (v.from) "; change " code { (short(&v.intent)) } ")"
                        }
                    }
                }
            }
            h2 { "Postmortem" }
            details {
                summary { "Markdown timeline" }
                pre class="postmortem" { (d.postmortem) }
            }
        },
    )
}

fn parked(viewer: &Viewer, run_id: &str, p: &Parked) -> Markup {
    let a = &p.awaiting;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    };
    let standing = match &p.tally {
        Tally::Waiting { have, need } => format!(
            "{} of {need} approvals{}",
            have.len(),
            if have.is_empty() {
                String::new()
            } else {
                format!(" ({})", have.join(", "))
            }
        ),
        Tally::Approved(by) => format!("approved by {}: the run goes on", by.join(", ")),
        Tally::Denied(by) => format!("denied by {by}: the run goes on without it"),
    };
    html! {
        section class="parked" aria-labelledby="parked-h" {
            h2 id="parked-h" { "Waiting for approval" }
            p class="change" { (p.pending.change) }
            dl {
                dt { "Step" } dd { code { (p.pending.step) } }
                dt { "Resource" } dd { code { (text(&a["resource"])) } }
                dt { "Change" } dd { code { (text(&a["interface"])) "." (text(&a["operation"])) } }
                @if a["would"]["from"] != serde_json::Value::Null || a["would"]["to"] != serde_json::Value::Null {
                    dt { "From → to" } dd { code { (text(&a["would"]["from"])) } " → " code { (text(&a["would"]["to"])) } }
                }
                dt { "Allowed by" } dd { "the step's grant: " code { (text(&a["interface"])) " mutate " (text(&a["resource"])) } }
                dt { "Plugin" } dd { code { (p.plugin) } " sha256 " code { (p.digest) } }
                dt { "Rule" } dd { (p.rule.describe()) }
                dt { "Change digest" } dd { code id="intent" { (p.pending.intent) } }
                @if let Some(at) = p.closes_ms {
                    dt { "Decide by" } dd { (runbook_core::time::rfc3339(at)) }
                }
                dt { "Standing" } dd id="standing" { (standing) }
            }
            @if !p.votes.is_empty() {
                ul class="votes" {
                    @for v in &p.votes {
                        li {
                            (v.by) " " (choice(v.decision))
                            " at " (runbook_core::time::rfc3339(v.at_ms)) " (" (v.how) ", from " (v.from) ")"
                            @if v.intent != p.pending.intent { " — for an earlier change" }
                        }
                    }
                }
            }
            @if matches!(p.tally, Tally::Waiting { .. }) {
                @if let Some(s) = viewer.session {
                    form method="post" action={ "/runs/" (run_id) "/decide" } class="decide" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="step" value=(p.pending.step);
                        input type="hidden" name="intent" value=(p.pending.intent);
                        button type="submit" name="choice" value="approve" class="approve" { "Approve as " (s.person) }
                        button type="submit" name="choice" value="deny" class="deny" { "Deny" }
                    }
                } @else {
                    p { a href={ "/login?next=/runs/" (run_id) } { "Sign in" } " to approve or deny." }
                }
            }
        }
    }
}

/// The sign-in page.
pub fn login(viewer: &Viewer, said: Option<&str>, next: &str) -> Markup {
    page(
        "Sign in",
        viewer,
        html! {
            h1 { "Sign in" }
            @if let Some(said) = said {
                p class="said" role="alert" { (said) }
            }
            form method="post" action="/login" class="login" {
                input type="hidden" name="next" value=(next);
                label for="person" { "Name (as in the approvers file)" }
                input id="person" name="person" autocomplete="username" required;
                label for="token" { "Token" }
                input id="token" name="token" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A page that only says something (not found, refused).
pub fn message(viewer: &Viewer, title: &str, said: &str) -> Markup {
    page(
        title,
        viewer,
        html! {
            h1 { (title) }
            p role="alert" { (said) }
            p { a href="/" { "All runs" } }
        },
    )
}

fn choice(c: Choice) -> &'static str {
    match c {
        Choice::Approve => "approved",
        Choice::Deny => "denied",
    }
}

fn verdict(v: runbook_core::approval::Verdict) -> &'static str {
    use runbook_core::approval::Verdict;
    match v {
        Verdict::Approved => "approved",
        Verdict::DryRun => "dry run",
        Verdict::Refused => "refused",
        Verdict::AwaitingApproval => "awaiting approval",
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// A call's result on one line, cut at 300 characters.
fn compact(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 300 {
        text.chars().take(300).collect::<String>() + "…"
    } else {
        text
    }
}

/// The style sheet (`/console.css`).
pub const CSS: &str = include_str!("../assets/console.css");
/// The script (`/console.js`): a run's page reloads when its journal grows.
pub const JS: &str = include_str!("../assets/console.js");
