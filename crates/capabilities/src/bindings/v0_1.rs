//! `runbook:host@0.1.0`, frozen (`wit/v0.1.0/`). Its host functions are
//! implemented in each capability module (and `log`) by forwarding to the
//! latest version's.

wasmtime::component::bindgen!({
    path: "../../wit/v0.1.0",
    world: "step",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub const VERSION: &str = "0.1.0";
