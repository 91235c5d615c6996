//! A plugin ready to run: manifest, component bytes checked against the
//! digest, compiled, and its imports read off the component.

use crate::cache::Origin;
use crate::runtime::Runtime;
use anyhow::{Context, Result};
use runbook_core::error::hinted;
use runbook_core::grants::{Grants, Interface};
use runbook_core::hash::sha256_hex;
use runbook_core::manifest::LoadedManifest;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

pub struct Plugin {
    pub manifest: LoadedManifest,
    /// Embedded in the binary rather than read from a plugin directory.
    pub builtin: bool,
    pub component_path: PathBuf,
    pub digest: String,
    pub size: usize,
    /// Compiled or loaded: at once for a plugin from a directory, on first
    /// use for a built-in one.
    compiled: std::sync::OnceLock<(Component, Origin)>,
    source: Source,
    /// Import names, e.g. `runbook:host/ecs@0.2.0`, `wasi:cli/stdout@0.2.6`.
    pub imports: Vec<String>,
    /// Bytes of memory it needs just to start (see [`Facts`]).
    pub memory_at_start: u64,
    /// The contract version it was built against (`0.2.0`, `0.1.0`).
    pub api: &'static str,
    /// The trusted keys whose signatures it carries (checked against a
    /// trust file; none without one, or built in).
    pub signers: Vec<String>,
}

/// How an import relates to the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportKind {
    /// A capability interface; `granted` says whether the manifest grants it.
    Capability { interface: Interface, granted: bool },
    /// `log` and `types`: always available.
    Always,
    /// A WASI interface: linked, but with nothing behind it (no files,
    /// sockets, env or args).
    Wasi,
    /// A WASI interface this host does not link at all (`wasi:http`).
    UnsupportedWasi,
    /// A `runbook:host` version this host does not provide.
    WrongVersion(String),
    /// Anything else: nothing provides it.
    Unknown,
}

pub fn classify(import: &str, grants: &Grants) -> ImportKind {
    if let Some(rest) = import.strip_prefix("runbook:host/") {
        let (name, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !runbook_capabilities::bindings::VERSIONS.contains(&version) {
            return ImportKind::WrongVersion(version.to_string());
        }
        return match runbook_core::interface::Interface::from_wit_name(name) {
            Some(interface) => ImportKind::Capability {
                interface,
                granted: grants.scope(interface).is_some(),
            },
            None if name == "log" || name == "types" => ImportKind::Always,
            None if name == "history"
                && version != runbook_capabilities::bindings::v0_1::VERSION =>
            {
                ImportKind::Always
            }
            None => ImportKind::Unknown,
        };
    }
    if import.starts_with("wasi:http/") {
        return ImportKind::UnsupportedWasi;
    }
    if import.starts_with("wasi:") {
        return ImportKind::Wasi;
    }
    ImportKind::Unknown
}

/// Where the component's code comes from when it is first needed.
enum Source {
    Directory,
    Builtin(&'static crate::builtin::Builtin),
    /// Read for review only (`inspect`): never compiled.
    Unloaded,
}

/// What a component says about itself, read without compiling it.
pub struct Facts {
    /// Import names, e.g. `runbook:host/ecs@0.2.0`.
    pub imports: Vec<String>,
    /// The largest memory any of its modules starts with, in bytes: less
    /// than this under `limits.memory_mib` and it cannot even start.
    pub memory_at_start: u64,
}

/// Reads `bytes` as a component: its top-level imports and the initial
/// size of every memory its core modules define.
pub fn read_facts(bytes: &[u8]) -> Result<Facts, String> {
    use wasmparser::{Parser, Payload};
    let mut imports = Vec::new();
    let mut memory_at_start = 0u64;
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| {
            // Its message, without the byte dump some errors append.
            let m = e.message();
            let m = m.split(" - expected=").next().unwrap_or(m);
            format!("not a valid WebAssembly component: {m}")
        })?;
        match payload {
            Payload::Version { encoding, .. }
                if depth == 0 && encoding != wasmparser::Encoding::Component =>
            {
                return Err("a core module, not a component: build it for `wasm32-wasip2` (or run it through `wasm-tools component new`)".into());
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| format!("reading its imports: {e}"))?;
                    // Types the world `use`s are imported too; they are
                    // not something the host provides.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(import.name.name.to_string());
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let m = memory.map_err(|e| format!("reading its memories: {e}"))?;
                    let page = 1u64 << m.page_size_log2.unwrap_or(16);
                    memory_at_start = memory_at_start.max(m.initial.saturating_mul(page));
                }
            }
            _ => {}
        }
    }
    Ok(Facts {
        imports,
        memory_at_start,
    })
}

/// The contract version a component's `runbook:host` imports name: all
/// the same one, or the latest when it imports none.
fn api_of(imports: &[String]) -> Result<&'static str, String> {
    let mut found: Option<&str> = None;
    for i in imports {
        let Some(v) = i
            .strip_prefix("runbook:host/")
            .and_then(|r| r.split_once('@'))
            .map(|x| x.1)
        else {
            continue;
        };
        match found {
            Some(f) if f != v => {
                return Err(format!(
                    "it imports both `runbook:host@{f}` and `@{v}`; build it against one version"
                ));
            }
            _ => found = Some(v),
        }
    }
    let v = found.unwrap_or(runbook_capabilities::bindings::VERSION);
    Ok(runbook_capabilities::bindings::VERSIONS
        .iter()
        .copied()
        .find(|known| *known == v)
        .unwrap_or(runbook_capabilities::bindings::VERSION))
}

fn imports(runtime: &Runtime, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(&runtime.engine)
        .map(|(n, _)| n.to_string())
        .collect()
}

impl Plugin {
    pub fn load(
        runtime: &Runtime,
        manifest: LoadedManifest,
        component_dirs: &[PathBuf],
        trust: Option<&runbook_core::signing::Trust>,
    ) -> Result<Self> {
        Self::load_inner(runtime, manifest, component_dirs, trust, false)
    }

    /// [`Plugin::load`] for a run: before anything is compiled, an import
    /// nothing provides, or one the manifest does not grant, is refused,
    /// with what to change.
    pub fn load_to_run(
        runtime: &Runtime,
        manifest: LoadedManifest,
        component_dirs: &[PathBuf],
        trust: Option<&runbook_core::signing::Trust>,
    ) -> Result<Self> {
        Self::load_inner(runtime, manifest, component_dirs, trust, true)
    }

    fn load_inner(
        runtime: &Runtime,
        manifest: LoadedManifest,
        component_dirs: &[PathBuf],
        trust: Option<&runbook_core::signing::Trust>,
        check_imports: bool,
    ) -> Result<Self> {
        let (mut plugin, bytes) = Self::read_bytes(manifest, component_dirs, trust)?;
        if check_imports {
            plugin.check_imports(&plugin.manifest.manifest.grants, None)?;
        }
        let (component, origin) = runtime
            .component(&bytes, &plugin.digest, &plugin.component_path)
            .with_context(|| format!("loading plugin `{}`", plugin.name()))?;
        plugin.imports = imports(runtime, &component);
        plugin.compiled = (component, origin).into();
        plugin.source = Source::Directory;
        Ok(plugin)
    }

    /// Reads a plugin from a directory without compiling it: digest
    /// checked against the manifest's pin and the signatures (with
    /// `trust`), imports read off the bytes. `inspect` stops here;
    /// [`Plugin::load`] checks the imports against the grant and compiles.
    pub fn read(
        manifest: LoadedManifest,
        component_dirs: &[PathBuf],
        trust: Option<&runbook_core::signing::Trust>,
    ) -> Result<Self> {
        Ok(Self::read_bytes(manifest, component_dirs, trust)?.0)
    }

    /// [`Plugin::read`], and the bytes that were checked.
    fn read_bytes(
        manifest: LoadedManifest,
        component_dirs: &[PathBuf],
        trust: Option<&runbook_core::signing::Trust>,
    ) -> Result<(Self, Vec<u8>)> {
        let component_path = manifest.component_path(component_dirs)?;
        let bytes = runbook_core::files::read_bytes(
            &component_path,
            "component",
            runbook_core::files::MAX_COMPONENT,
        )?;
        let digest = sha256_hex(&bytes);
        let name = &manifest.manifest.name;
        match &manifest.manifest.sha256 {
            Some(pinned) if *pinned != digest => {
                return Err(hinted(
                    format!(
                        "digest mismatch for plugin `{name}`: `{}` has sha256 `{digest}`, but manifest `{}` pins `{pinned}`",
                        component_path.display(),
                        manifest.path.display()
                    ),
                    "the component changed since it was reviewed: rebuild the reviewed source (Rust; Python and JavaScript builds differ every time, so restore the reviewed component), or review this one and update `sha256` (`runbook inspect` prints it)",
                ));
            }
            _ => {}
        }
        // Before the bytes are compiled: an unsigned or altered component
        // is never even parsed.
        let signers = match trust {
            Some(trust) => trust.verify(&runbook_core::signing::Subject::of(&manifest, &digest))?,
            None => Vec::new(),
        };
        let facts = read_facts(&bytes).map_err(|why| {
            hinted(
                format!(
                    "component `{}` of plugin `{name}`: {why}",
                    component_path.display()
                ),
                "step plugins are components: build it with `runbook build` (or `cargo build --target wasm32-wasip2`); see plugins/README.md",
            )
        })?;
        let api = api_of(&facts.imports).map_err(|why| {
            hinted(
                format!("plugin `{name}` (`{}`): {why}", component_path.display()),
                "rebuild it against the WIT in this repository's `wit/`",
            )
        })?;
        let plugin = Self {
            manifest,
            api,
            builtin: false,
            component_path,
            digest,
            size: bytes.len(),
            compiled: std::sync::OnceLock::new(),
            source: Source::Unloaded,
            imports: facts.imports,
            memory_at_start: facts.memory_at_start,
            signers,
        };
        Ok((plugin, bytes))
    }

    /// A plugin embedded in the binary.
    pub fn builtin(runtime: &Runtime, b: &'static crate::builtin::Builtin) -> Result<Self> {
        let manifest = b.manifest()?;
        let component_path = b.location().join(&manifest.manifest.component);
        let _ = runtime;
        let imports: Vec<String> = b.imports.iter().map(|s| s.to_string()).collect();
        let memory_at_start = read_facts(b.wasm).map_or(0, |f| f.memory_at_start);
        Ok(Self {
            memory_at_start,
            api: api_of(&imports).map_err(anyhow::Error::msg)?,
            imports,
            manifest,
            builtin: true,
            component_path,
            digest: b.sha256.to_string(),
            size: b.wasm.len(),
            compiled: std::sync::OnceLock::new(),
            source: Source::Builtin(b),
            signers: Vec::new(),
        })
    }

    /// What a signature of this plugin covers.
    pub fn signed_subject(&self) -> runbook_core::signing::Subject<'_> {
        runbook_core::signing::Subject::of(&self.manifest, &self.digest)
    }

    /// The compiled component, loaded now if it was not yet.
    pub fn component(&self, runtime: &Runtime) -> Result<Component> {
        if let Some((c, _)) = self.compiled.get() {
            return Ok(c.clone());
        }
        let loaded = match &self.source {
            Source::Builtin(b) => runtime.builtin_component(b)?,
            Source::Directory => unreachable!("directory plugins are compiled when loaded"),
            Source::Unloaded => {
                return Err(anyhow::anyhow!(
                    "plugin `{}` was read for review only, not compiled",
                    self.name()
                ));
            }
        };
        Ok(self.compiled.get_or_init(|| loaded).0.clone())
    }

    /// Where the compiled code came from, once it is loaded.
    pub fn origin(&self) -> Option<Origin> {
        self.compiled.get().map(|(_, o)| *o)
    }

    /// Where the plugin comes from, for listings: `built-in` or its
    /// manifest's path.
    pub fn source(&self) -> String {
        if self.builtin {
            "built-in".to_string()
        } else {
            self.manifest.path.display().to_string()
        }
    }

    pub fn name(&self) -> &str {
        self.manifest.manifest.name.as_str()
    }

    pub fn manifest_path(&self) -> &Path {
        &self.manifest.path
    }

    /// Refuses imports the grant does not cover, naming the manifest line
    /// that would allow them.
    pub fn check_imports(&self, grants: &Grants, step: Option<&str>) -> Result<()> {
        let at = step.map(|s| format!(" (step `{s}`)")).unwrap_or_default();
        for import in &self.imports {
            match classify(import, grants) {
                ImportKind::Capability { granted: true, .. }
                | ImportKind::Always
                | ImportKind::Wasi => {}
                ImportKind::Capability {
                    interface,
                    granted: false,
                } => {
                    return Err(hinted(
                        format!(
                            "plugin `{}`{at} imports `{import}`, which its manifest `{}` does not grant",
                            self.name(),
                            self.manifest_path().display()
                        ),
                        format!(
                            "if the plugin should have it, add `{interface} = {{ read = [...] }}` under `[grants]` in `{}` listing {}, and have it reviewed",
                            self.manifest_path().display(),
                            interface.resource_form()
                        ),
                    ));
                }
                ImportKind::WrongVersion(v) => {
                    return Err(hinted(
                        format!(
                            "plugin `{}`{at} imports `{import}`: this host provides `runbook:host` {}, not `{v}`",
                            self.name(),
                            runbook_capabilities::bindings::VERSIONS.join(" and ")
                        ),
                        "rebuild the plugin against the WIT in this repository's `wit/`",
                    ));
                }
                ImportKind::Unknown => {
                    return Err(hinted(
                        format!(
                            "plugin `{}`{at} imports `{import}`, which this host does not provide",
                            self.name()
                        ),
                        "steps may import only `runbook:host` interfaces and WASI",
                    ));
                }
                ImportKind::UnsupportedWasi => {
                    return Err(hinted(
                        format!(
                            "plugin `{}`{at} imports `{import}`: steps have no network of their own, and this host does not link `wasi:http`",
                            self.name()
                        ),
                        "reach services through capabilities only; a JavaScript plugin built with componentize-js imports `wasi:http` unless its `http` and `fetch-event` features are disabled (`runbook build` disables them)",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read off the bytes, the imports are what wasmtime lists after
    /// compiling (the build script recorded those for each built-in).
    #[test]
    fn imports_read_without_compiling_match_wasmtime() {
        for b in crate::builtin::all() {
            let facts = read_facts(b.wasm).unwrap();
            let recorded: Vec<String> = b.imports.iter().map(|s| s.to_string()).collect();
            assert_eq!(facts.imports, recorded, "{}", b.name);
            assert!(facts.memory_at_start >= 1 << 16, "{}", b.name);
        }
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let err = read_facts(b"\0asm\x01\0\0\0").err().unwrap();
        assert!(err.contains("a core module, not a component"), "{err}");
        assert!(read_facts(b"nonsense").is_err());
    }
}
