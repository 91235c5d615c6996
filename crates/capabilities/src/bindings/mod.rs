//! The host's side of the WIT contract, one `bindgen!` per version: the
//! latest (`wit/`, `runbook:host@0.2.0`) at this module's root, and each
//! frozen earlier version in a module of its own ([`v0_1`], from
//! `wit/v0.1.0/`), whose host functions forward to the latest. A component
//! built against 0.1.0 keeps running unchanged: the host links both.
//!
//! Host functions are `async` (steps run as futures on tokio) and may trap,
//! which only the host's own limits do (`crate::limits`): a denied or
//! failed call reaches the guest as a WIT `error` value, never as a trap.
//!
//! Compatibility policy: a change to the contract is a new package version
//! in `wit/`, the old one moves to `wit/vX.Y.Z/` unchanged, and the host
//! keeps linking it for as long as it is in [`VERSIONS`]; a version is
//! dropped only with a major release of the host, announced a release
//! ahead.

pub mod v0_1;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

/// The contract's latest version, as in `runbook:host/ecs@0.2.0`.
pub const VERSION: &str = "0.2.0";

/// Every version this host links, oldest first.
pub const VERSIONS: &[&str] = &[v0_1::VERSION, VERSION];

/// A guest's argument of one version's generated type as the
/// same-shaped type of another (strings and integers: the versions' WIT
/// types are identical where they are converted). Never a panic: a value
/// that does not convert is a trap that ends the step.
pub fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: A) -> wasmtime::Result<B> {
    serde_json::to_value(a)
        .and_then(serde_json::from_value)
        .map_err(|e| wasmtime::format_err!("converting between contract versions: {e}"))
}

/// A result of the latest version as the same-shaped result of 0.1.0.
/// A value that does not convert is the step's error, never a panic.
/// (Floating-point values are checked finite where they enter, in their
/// capability, or converted field by field: JSON has no NaN.)
pub fn forward<A: serde::Serialize, B: serde::de::DeserializeOwned>(
    r: Result<A, Error>,
) -> Result<B, v0_1::runbook::host::types::Error> {
    use v0_1::runbook::host::types::Error as Old;
    match r {
        Ok(a) => serde_json::to_value(a)
            .and_then(serde_json::from_value)
            .map_err(|e| {
                Old::Unavailable(format!(
                    "the result cannot be expressed in `runbook:host@0.1.0`: {e}"
                ))
            }),
        Err(e) => Err(old_error(e)),
    }
}

/// An error of the latest version as 0.1.0's (the same cases).
pub fn old_error(e: Error) -> v0_1::runbook::host::types::Error {
    use v0_1::runbook::host::types::Error as Old;
    match e {
        Error::Denied(m) => Old::Denied(m),
        Error::Unavailable(m) => Old::Unavailable(m),
        Error::Invalid(m) => Old::Invalid(m),
        Error::Timeout(m) => Old::Timeout(m),
        Error::NotFound(m) => Old::NotFound(m),
    }
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::Unavailable(_) => "unavailable",
            Error::Invalid(_) => "invalid",
            Error::Timeout(_) => "timeout",
            Error::NotFound(_) => "not-found",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Denied(m)
            | Error::Unavailable(m)
            | Error::Invalid(m)
            | Error::Timeout(m)
            | Error::NotFound(m) => m,
        }
    }

    /// `kind: message`; wit-bindgen's own `Display` prints the Rust enum.
    pub fn text(&self) -> String {
        format!("{}: {}", self.kind(), self.message())
    }
}
