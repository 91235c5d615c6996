//! Entry points for fuzzing the parsers of everything a user hands the
//! host: runbooks, plugin manifests, scenarios, environments and metric
//! replays. `fuzz/` drives them with libFuzzer (`cargo +nightly fuzz run
//! TARGET`); `tests/fuzz_smoke.rs` runs them over the seed corpus, every
//! crash found so far, and a few thousand mutations of each seed, on the
//! stable toolchain, in the test suite. Each must return (valid or an
//! error), never panic, never hang.

use std::path::Path;

/// A fuzz target: any bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// The targets, by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("runbook", runbook),
    ("manifest", manifest),
    ("scenario", scenario),
    ("environment", environment),
    ("replay", replay),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

pub fn runbook(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = runbook_core::runbook::Runbook::parse(t, Path::new("fuzz.md"));
    }
}

pub fn manifest(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = runbook_core::manifest::LoadedManifest::parse(t, Path::new("fuzz/plugin.toml"));
    }
}

pub fn scenario(data: &[u8]) {
    if let Some(t) = text(data)
        && let Ok(s) = runbook_capabilities::scenario::Scenario::parse(t, Path::new("fuzz.toml"))
    {
        // A valid scenario must also make a world without panicking.
        let _ = s.backends();
    }
}

pub fn environment(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ =
            runbook_capabilities::environment::Environment::parse(t, Path::new("fuzz/env.toml"));
    }
}

pub fn replay(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = runbook_capabilities::metrics::replay::Replay::parse(t, Path::new("fuzz.toml"));
    }
}
