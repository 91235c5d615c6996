//! Simulation scenarios (TOML): when the run starts, what path it should
//! take, and one section per capability saying what its simulated backend
//! holds (each capability module defines and checks its own section).

use crate::backends::Backends;
use crate::capability::{Capability, Missing};
use crate::sim::World;
use anyhow::Result;
use runbook_core::interface::Interface;
use runbook_core::time::Timestamp;
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

impl Expect {
    /// The step ids of the expected path (`step` or `step:outcome`).
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.path
            .iter()
            .map(|e| e.split_once(':').map_or(e.as_str(), |(s, _)| s))
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
                pub $section: <crate::$module::Cap as Capability>::SimConfig,
            )*
        }

        impl Scenario {
            fn check_sections(&self) -> Result<(), String> {
                $(<crate::$module::Cap as Capability>::check_sim(&self.$section)?;)*
                Ok(())
            }

            /// A fresh simulated world for one run, every capability backed
            /// by it. Errors say what in the scenario does not add up.
            pub fn backends(&self) -> Result<Backends, String> {
                let world = World::new(self.start.0, self.incident_start.map(|t| t.0));
                let builder = Backends::builder(world.clone());
                $(
                    let builder = builder.with::<crate::$module::Cap>(
                        <crate::$module::Cap as Capability>::sim(&self.$section, &world),
                    );
                )*
                $(<crate::$module::Cap as Capability>::check_sim_world(&self.$section, &world)?;)*
                Ok(builder.build())
            }

            /// Whether the scenario provides resource `name` of `interface`.
            pub fn provides(&self, interface: Interface, name: &str) -> Result<(), Missing> {
                match interface {
                    $(Interface::$variant => <crate::$module::Cap as Capability>::sim_provides(&self.$section, name),)*
                }
            }
        }
    };
}
runbook_core::with_capabilities!(define_scenario);

impl Scenario {
    pub fn load(path: &Path) -> Result<Self> {
        runbook_core::parse::load_toml(path, "scenario", HINT, |s: &mut Scenario| s.validate())
    }

    /// A scenario from `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        runbook_core::parse::parse_toml(text, path, "scenario", HINT, |s: &mut Scenario| {
            s.validate()
        })
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
