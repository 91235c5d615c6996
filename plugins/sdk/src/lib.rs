//! Guest side of the `runbook:host@0.1.0` contract.
//!
//! A plugin implements [`Step`] and calls [`export_step!`]; everything else
//! here (input parsing, outcome building, error display) keeps plugins short
//! and their error messages alike.

// In a module of its own: at the crate root the exported macro collides with
// the `use` wit-bindgen adds for it.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "export_step",
        default_bindings_module: "runbook_sdk::bindings",
    });
}

pub use bindings::Guest as Step;
pub use bindings::export_step;
pub use bindings::runbook::host::{ecs, feature_flags as flags, log, metrics, redis};
pub use bindings::{Error, Outcome, Pair, RunContext};

impl Error {
    /// `kind: message`; wit-bindgen's own `Display` prints the Rust enum.
    pub fn text(&self) -> String {
        let (Error::Denied(m)
        | Error::Unavailable(m)
        | Error::Invalid(m)
        | Error::Timeout(m)
        | Error::NotFound(m)) = self;
        format!("{}: {m}", self.kind())
    }

    /// Short kind name, handy as an outcome label or fact.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::Unavailable(_) => "unavailable",
            Error::Invalid(_) => "invalid",
            Error::Timeout(_) => "timeout",
            Error::NotFound(_) => "not-found",
        }
    }
}

/// The step's inputs, as given in the runbook.
pub struct Inputs(Vec<Pair>);

impl Inputs {
    pub fn new(pairs: Vec<Pair>) -> Self {
        Self(pairs)
    }

    pub fn opt(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    pub fn str(&self, key: &str) -> Result<&str, Error> {
        self.opt(key)
            .ok_or_else(|| Error::Invalid(format!("missing input `{key}`")))
    }

    pub fn num<T: core::str::FromStr>(&self, key: &str) -> Result<T, Error> {
        let raw = self.str(key)?;
        raw.trim()
            .parse()
            .map_err(|_| Error::Invalid(format!("input `{key}` is not a number: `{raw}`")))
    }

    pub fn num_or<T: core::str::FromStr>(&self, key: &str, default: T) -> Result<T, Error> {
        match self.opt(key) {
            None => Ok(default),
            Some(_) => self.num(key),
        }
    }

    /// `Name=Value,Name2=Value2` into metric dimensions.
    pub fn dimensions(&self, key: &str) -> Result<Vec<metrics::Dimension>, Error> {
        let Some(raw) = self.opt(key) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|kv| {
                let (name, value) = kv.split_once('=').ok_or_else(|| {
                    Error::Invalid(format!("input `{key}`: `{kv}` is not `Name=Value`"))
                })?;
                Ok(metrics::Dimension {
                    name: name.trim().to_string(),
                    value: value.trim().to_string(),
                })
            })
            .collect()
    }

    /// A comma-separated list.
    pub fn list(&self, key: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .str(key)?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

/// Builds an [`Outcome`].
pub struct OutcomeBuilder {
    label: String,
    facts: Vec<Pair>,
}

pub fn outcome(label: &str) -> OutcomeBuilder {
    OutcomeBuilder {
        label: label.to_string(),
        facts: Vec::new(),
    }
}

impl OutcomeBuilder {
    pub fn fact(mut self, key: &str, value: impl core::fmt::Display) -> Self {
        self.facts.push(Pair {
            key: key.to_string(),
            value: value.to_string(),
        });
        self
    }

    pub fn summary(self, summary: impl Into<String>) -> Result<Outcome, Error> {
        Ok(Outcome {
            label: self.label,
            facts: self.facts,
            summary: summary.into(),
        })
    }
}

/// Logs into the run's timeline.
pub fn info(message: &str) {
    log::log(log::Level::Info, message, &[]);
}

/// The latest datapoint of a query, `None` when the window has no data.
pub fn latest(q: &metrics::MetricQuery) -> Result<Option<f64>, Error> {
    Ok(metrics::query(q)?.last().map(|d| d.value))
}
