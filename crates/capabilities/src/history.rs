//! `runbook:host/history` (0.2.0): the steps that ran before this one, so
//! a step can report on the run (an escalation page with what was tried).
//! Always linked; needs no grant and touches no backend: it only tells a
//! step what the runbook's own earlier steps returned.

use crate::bindings::runbook::host::history as wit;
use crate::bindings::runbook::host::history::StepSummary;
use crate::state::StepState;
use wasmtime::component::{HasSelf, Linker};

impl wit::Host for StepState {
    async fn steps(&mut self) -> wasmtime::Result<Vec<StepSummary>> {
        Ok(self.history.to_vec())
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}
