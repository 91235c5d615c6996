//! The wasmtime configuration, in one place because two programs use it:
//! the host at run time, and the build script, which precompiles the
//! built-in plugins into the binary. Compiled code is accepted only by an
//! engine configured the same way, so both must build it from here.
//!
//! This file is included by `build.rs` with `#[path]`: it may use nothing
//! but `wasmtime`.

/// The engine configuration every component is compiled and run with.
pub fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Deadlines interrupt guest code at the next epoch check, so a step
    // that never calls the host still stops.
    config.epoch_interruption(true);
    config
}
