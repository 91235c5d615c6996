//! What one question to the policies costs (`Policies::decide`), on one
//! thread: an allowed change, and a held one (which also works out the
//! rule of approvals that would lift it).
//!
//! Run with `cargo bench -p runbook-policy --bench question`.

use runbook_core::grants::{Access, Interface};
use runbook_policy::{Policies, Question, RunFacts, StepFacts, Verdict};
use std::time::{Duration, Instant};

const POLICIES: &str = r#"
@id("auth-flags-two-approvals")
forbid (principal, action == Runbook::Action::"feature-flags:mutate", resource is Runbook::Flag)
when { resource.name like "AUTH_*" }
unless { context.approvals.count >= 2 };

@id("rollback-freeze")
forbid (principal, action in Runbook::Action::"mutate", resource is Runbook::Service)
when { context.calendars.closed.contains("change-freeze") }
unless { context.approvals.groups.contains(Runbook::Group::"incident-commander") };
"#;

const CALENDARS: &str = r#"
[[calendar]]
name = "change-freeze"
closed = [{ weekday = "fri", from = "12:00", to = "24:00" }]
"#;

/// Median time per question over `batches` batches of `n`.
fn per_question(batches: usize, n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed() / n as u32
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("org.cedar"), POLICIES).expect("policies written");
    std::fs::write(dir.path().join("calendars.toml"), CALENDARS).expect("calendars written");
    let policies = Policies::load(dir.path()).expect("the policies load");
    let step = StepFacts {
        runbook_id: "RB-0031".into(),
        step_id: "enable-fallback".into(),
        plugin: "set-flag".into(),
        ..StepFacts::default()
    };
    let run = RunFacts::default();
    let ask = |resource: &'static str| Question {
        step: &step,
        run: &run,
        interface: Interface::FeatureFlags,
        access: Access::Mutate,
        resource,
        approvals: &[],
        // A Thursday: the freeze is open.
        now_ms: 1_764_856_800_000,
        recent: Default::default(),
    };
    let allowed = ask("CHECKOUT_V2");
    let held = ask("AUTH_STATELESS_FALLBACK");
    assert_eq!(policies.decide(&allowed).verdict, Verdict::Allow);
    assert!(matches!(
        policies.decide(&held).verdict,
        Verdict::NeedsApprovals { .. }
    ));
    let a = per_question(9, 2_000, || {
        std::hint::black_box(policies.decide(&allowed));
    });
    let h = per_question(9, 500, || {
        std::hint::black_box(policies.decide(&held));
    });
    println!(
        "a question, allowed:                         {:>8.1} µs",
        a.as_secs_f64() * 1e6
    );
    println!(
        "a question, held (and the rule worked out):  {:>8.1} µs",
        h.as_secs_f64() * 1e6
    );
    println!("held ÷ allowed: {:.1}×", h.as_secs_f64() / a.as_secs_f64());
}
