//! Simulation scenarios (TOML): when the run starts, what path it should
//! take, and one section per capability saying what its simulated backend
//! holds (each capability module defines and checks its own section).

use crate::capability::sim::World;
use crate::capability::{Backends, Capability, Missing};
use crate::interface::Interface;
use crate::time::Timestamp;
use anyhow::Result;
use serde::Deserialize;
use std::path::Path;

const HINT: &str = "see runbooks/README.md for the scenario format";

/// The path this scenario should take through the runbook, checked by
/// `runbook test` and `run`: step ids in order, each optionally with the
/// outcome it must return (`check-budget:burning`), and the final status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: String,
    pub path: Vec<String>,
}

/// How a run compared with its scenario's `[expect]`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Expectation {
    pub met: bool,
    /// The expected status and path.
    pub status: String,
    pub path: Vec<String>,
    /// Where the run went otherwise, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

impl Expect {
    /// The step ids of the expected path (`step` or `step:outcome`).
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.path
            .iter()
            .map(|e| e.split_once(':').map_or(e.as_str(), |(s, _)| s))
    }

    /// Compares a run with the expectation: the path (and, where an entry
    /// says `step:outcome`, the outcome), the status; and a step that ended
    /// `error` or `limit-exceeded` fails it unless the path names that
    /// outcome, so a broken plugin cannot pass by taking the error route.
    pub fn check(&self, report: &crate::report::Report) -> Expectation {
        use crate::runbook::{LABEL_ERROR, LABEL_LIMIT};
        let status = serde_json::to_value(report.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let got = report.path();
        let want: Vec<&str> = self.steps().collect();
        let mut differences = Vec::new();
        if got != want {
            let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            let end = "the end";
            differences.push(format!(
                "step {} was `{}`, expected `{}` (expected path {}, got {})",
                at + 1,
                got.get(at).copied().unwrap_or(end),
                want.get(at).copied().unwrap_or(end),
                want.join(" → "),
                got.join(" → ")
            ));
        }
        for (entry, step) in self.path.iter().zip(&report.steps) {
            let named = entry.split_once(':').map(|(_, o)| o);
            match named {
                Some(o) if o != step.outcome => differences.push(format!(
                    "step `{}` returned `{}`, expected `{o}`: {}",
                    step.id, step.outcome, step.summary
                )),
                None if step.outcome == LABEL_ERROR || step.outcome == LABEL_LIMIT => differences
                    .push(format!(
                        "step `{}` ended `{}`: {} (write `{}:{}` in the path if that is expected)",
                        step.id, step.outcome, step.summary, step.id, step.outcome
                    )),
                _ => {}
            }
        }
        if status != self.status {
            differences.push(format!("status was `{status}`, expected `{}`", self.status));
        }
        Expectation {
            met: differences.is_empty(),
            status: self.status.clone(),
            path: self.path.clone(),
            differences,
        }
    }
}

macro_rules! define_scenario {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Scenario {
            pub description: String,
            /// Simulated wall clock at the start of the run (RFC 3339).
            pub start: Timestamp,
            #[serde(default)]
            pub incident_start: Option<Timestamp>,
            #[serde(default)]
            pub expect: Option<Expect>,
            $(
                #[serde(default)]
                pub $section: <crate::capability::$module::Cap as Capability>::SimConfig,
            )*
        }

        impl Scenario {
            fn check_sections(&self) -> Result<(), String> {
                $(<crate::capability::$module::Cap as Capability>::check_sim(&self.$section)?;)*
                Ok(())
            }

            /// A fresh simulated world for one run, every capability backed
            /// by it. Errors say what in the scenario does not add up.
            pub fn backends(&self) -> Result<Backends, String> {
                let world = World::new(self.start.0, self.incident_start.map(|t| t.0));
                let builder = Backends::builder(world.clone());
                $(
                    let builder = builder.with::<crate::capability::$module::Cap>(
                        <crate::capability::$module::Cap as Capability>::sim(&self.$section, &world),
                    );
                )*
                $(<crate::capability::$module::Cap as Capability>::check_sim_world(&self.$section, &world)?;)*
                Ok(builder.build())
            }

            /// Whether the scenario provides resource `name` of `interface`.
            pub fn provides(&self, interface: Interface, name: &str) -> Result<(), Missing> {
                match interface {
                    $(Interface::$variant => <crate::capability::$module::Cap as Capability>::sim_provides(&self.$section, name),)*
                }
            }
        }
    };
}
crate::interface::with_capabilities!(define_scenario);

impl Scenario {
    pub fn load(path: &Path) -> Result<Self> {
        crate::error::load_toml(path, "scenario", HINT, |s: &mut Scenario| s.validate())
    }

    /// A scenario from `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        crate::error::parse_toml(text, path, "scenario", HINT, |s: &mut Scenario| {
            s.validate()
        })
    }

    /// The resources RB steps are granted must exist in the simulation too.
    pub fn check_plan(&self, plan: &crate::plan::Plan, path: &Path) -> Result<()> {
        plan.check_provided(
            &format!("scenario `{}`", path.display()),
            path,
            |i, name| self.provides(i, name),
        )
    }

    fn validate(&self) -> Result<(), String> {
        if self.incident_start.is_some_and(|t| t > self.start) {
            return Err("`incident_start` is after `start`".into());
        }
        self.check_sections()?;
        // Cross-section checks (an effect naming a service) need the world.
        self.backends().map(|_| ())
    }
}
