//! `runbook:host@0.1.0`, frozen (`wit/v0.1.0/`). Its host functions are
//! implemented in each capability module by forwarding to the latest
//! version's; `types` and `log` are here.

use crate::capability::StepState;
use wasmtime::component::{HasSelf, Linker};

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "step",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub const VERSION: &str = "0.1.0";

impl runbook::host::types::Host for StepState {}

impl runbook::host::log::Host for StepState {
    async fn log(
        &mut self,
        level: runbook::host::log::Level,
        message: String,
        fields: Vec<runbook::host::types::Pair>,
    ) -> wasmtime::Result<()> {
        crate::bindings::runbook::host::log::Host::log(
            self,
            super::convert(level),
            message,
            super::convert(fields),
        )
        .await
    }
}

/// The always-available interfaces of 0.1.0: `types` and `log`.
pub fn add_base_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    runbook::host::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    runbook::host::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}
