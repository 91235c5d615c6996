//! The one `bindgen!` over `wit/`. Host functions are `async` (steps run
//! as futures on tokio) and may trap, which only the host's own limits do
//! (`capability::limits`): a denied or failed call reaches the guest as a
//! WIT `error` value, never as a trap.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

/// The contract's version, as in `runbook:host/ecs@0.1.0`.
pub const VERSION: &str = "0.1.0";

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
