//! The built-in step plugins (`plugins/steps/*`), embedded in the binary by
//! the build script: each one's manifest, its component, and the component
//! precompiled for this host's engine. They are as trusted as the binary
//! itself, so they are pinned by the digest the build computed and never
//! touch the on-disk cache.

use crate::cache::Origin;
use anyhow::{Context, Result};
use runbook_core::manifest::LoadedManifest;
use std::path::PathBuf;
use wasmtime::component::Component;

/// One embedded plugin.
pub struct Builtin {
    pub name: &'static str,
    /// The text of its `plugin.toml`.
    pub manifest: &'static str,
    /// Hex sha256 of `wasm`.
    pub sha256: &'static str,
    /// What the component imports, e.g. `runbook:host/metrics@0.1.0`.
    pub imports: &'static [&'static str],
    /// The component, as built.
    pub wasm: &'static [u8],
    /// The component compiled by `Engine::precompile_component` with
    /// [`crate::engine_config::config`].
    pub cwasm: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Where this build put every plugin's component, the testing plugins
/// (`plugins/testing/*`) among them: for this workspace's tests and
/// benches. The binary never reads it (a constant nothing uses is not in
/// it), so no build path is baked into what is installed.
pub const BUILT_PLUGINS: &str = env!("RUNBOOK_BUILT_PLUGINS");

/// The built-in plugin called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Every built-in plugin, by name.
pub fn all() -> &'static [Builtin] {
    BUILTINS
}

impl Builtin {
    /// How the built-in is named where a file path would be.
    pub fn location(&self) -> PathBuf {
        PathBuf::from(format!("(built-in)/{}", self.name))
    }

    /// Its manifest, pinned to the embedded component's digest.
    pub fn manifest(&self) -> Result<LoadedManifest> {
        let path = self.location().join(runbook_core::manifest::FILE_NAME);
        let mut loaded = LoadedManifest::parse(self.manifest, &path)
            .with_context(|| format!("the built-in plugin `{}` is broken", self.name))?;
        loaded.manifest.sha256 = Some(self.sha256.to_string());
        Ok(loaded)
    }

    /// The compiled component: the embedded native code, or, when this
    /// machine's CPU cannot run what the build machine compiled, the
    /// embedded component compiled afresh.
    pub fn component(&self, engine: &wasmtime::Engine) -> Result<(Component, Origin)> {
        // SAFETY: `cwasm` is part of this binary, written by its own build
        // script with the same wasmtime and engine configuration: it is as
        // trusted as the binary's own code. Nothing from outside the binary
        // is deserialized here.
        if let Ok(c) = unsafe { Component::deserialize(engine, self.cwasm) } {
            return Ok((c, Origin::Embedded));
        }
        let c = Component::new(engine, self.wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling the built-in plugin `{}`", self.name))?;
        Ok((c, Origin::Compiled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_valid_pinned_and_precompiled_for_this_engine() {
        assert!(all().len() >= 7, "{}", all().len());
        let engine = wasmtime::Engine::new(&crate::engine_config::config()).unwrap();
        for b in all() {
            let m = b.manifest().unwrap();
            assert_eq!(m.manifest.name.as_str(), b.name);
            assert_eq!(m.manifest.sha256.as_deref(), Some(b.sha256));
            assert_eq!(runbook_core::hash::sha256_hex(b.wasm), b.sha256);
            let (c, origin) = b.component(&engine).unwrap();
            assert_eq!(origin, Origin::Embedded, "{} was compiled again", b.name);
            let imports: Vec<String> = c
                .component_type()
                .imports(&engine)
                .map(|(n, _)| n.to_string())
                .collect();
            assert_eq!(imports, b.imports, "{}", b.name);
        }
    }
}
