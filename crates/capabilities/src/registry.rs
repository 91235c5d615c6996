//! The capabilities, dispatched to from the registry in
//! [`runbook_core::interface`]: their modules declared, each one's linker,
//! whether its changes count as changes to a system, and a step's linker
//! with exactly what it is granted.

use crate::bindings::v0_1::runbook::host as v0_1;
use crate::capability::Capability;
use crate::state::StepState;
use anyhow::Result;
use runbook_core::interface::Interface;
use wasmtime::component::{HasSelf, Linker};

macro_rules! define_capabilities {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        /// Links a capability's WIT interface(s).
        pub fn add_to_linker(
            interface: Interface,
            linker: &mut Linker<StepState>,
        ) -> wasmtime::Result<()> {
            match interface {
                $(Interface::$variant => <crate::$module::Cap as Capability>::add_to_linker(linker),)*
            }
        }

        /// Whether the capability's changes are changes to a system
        /// (counted by `max_mutations`, leased), not messages to people.
        pub fn blast_radius(interface: Interface) -> bool {
            match interface {
                $(Interface::$variant => <crate::$module::Cap as Capability>::BLAST_RADIUS,)*
            }
        }
    };
}
runbook_core::with_capabilities!(define_capabilities);

/// A linker with WASI (empty: no files, network, env or args), `log` and
/// `history`, and exactly the granted capability interfaces, each in every
/// version of the contract the host links. A component importing
/// anything else fails to instantiate against it.
pub fn linker_for(
    engine: &wasmtime::Engine,
    granted: impl Iterator<Item = Interface>,
) -> Result<Linker<StepState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::bindings::runbook::host::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    crate::log::add_to_linker(&mut linker)?;
    crate::history::add_to_linker(&mut linker)?;
    // The always-available interfaces of contract 0.1.0.
    v0_1::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    v0_1::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    for interface in granted {
        add_to_linker(interface, &mut linker)?;
    }
    Ok(linker)
}

/// `types` has no functions; linking it needs the (empty) impls.
impl crate::bindings::runbook::host::types::Host for StepState {}
impl v0_1::types::Host for StepState {}
