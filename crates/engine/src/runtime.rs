//! The wasmtime engine, its epoch ticker, the pooling instance allocator,
//! linkers and instance templates built once per process, and the
//! compiled-component cache. Components compile once per process and are
//! kept on disk keyed by their sha256 and the engine's compatibility hash,
//! so a second run only loads.

use crate::cache::Origin;
use anyhow::{Context, Result};
use runbook_capabilities::bindings::StepPre;
use runbook_capabilities::state::StepState;
use runbook_core::interface::Interface;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of step deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How many steps may run at once when instances are not pooled.
pub const DEFAULT_INSTANCES: u32 = 64;

/// A fiber stack per running step: guest frames (at most
/// [`MAX_WASM_STACK`]) and the host futures a capability call polls on it
/// (AWS SDK calls among them) share it.
const ASYNC_STACK: usize = 8 << 20;
const MAX_WASM_STACK: usize = 1 << 20;

/// An instance template's key: the component's digest and the interfaces
/// it is linked with.
type PreKey = (String, Vec<Interface>);

/// An instance template, for the contract version the component was built
/// against.
#[derive(Clone)]
pub enum Pre {
    Latest(StepPre<StepState>),
    V0_1(runbook_capabilities::bindings::v0_1::StepPre<StepState>),
}

pub struct Runtime {
    pub engine: Engine,
    /// Where the disk cache is and the engine's compatibility hash; the
    /// cache is opened (and its directory created) on first use only, so a
    /// run of built-in plugins leaves nothing on disk.
    cache_at: Option<(PathBuf, String)>,
    cache: std::sync::OnceLock<Option<crate::cache::DiskCache>>,
    compiled: Mutex<HashMap<String, Component>>,
    linkers: Mutex<HashMap<Vec<Interface>, Arc<Linker<StepState>>>>,
    pres: Mutex<HashMap<PreKey, Pre>>,
    /// One permit per pooled instance slot: a step waits for one before it
    /// instantiates, so any number of runs may be in flight at once.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Runtime {
    /// For one run at a time (the CLI): instances are allocated on demand,
    /// which costs nothing up front. `cache_dir`: where compiled components
    /// are kept; `None` disables the disk cache.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>> {
        Self::build(cache_dir, None)
    }

    /// For many runs at once (`bench`, workers): room for `instances` steps
    /// running at once, from a pool reserved up front with memory kept
    /// resident between steps (no per-step mmap of a 4 GiB reservation
    /// and the TLB flushes of unmapping it). Further steps wait for a slot.
    pub fn with_instances(cache_dir: Option<PathBuf>, instances: u32) -> Result<Arc<Self>> {
        Self::build(cache_dir, Some(instances.max(1)))
    }

    fn build(cache_dir: Option<PathBuf>, pooled: Option<u32>) -> Result<Arc<Self>> {
        let mut config: Config = crate::engine_config::config();
        config.async_stack_size(ASYNC_STACK);
        config.max_wasm_stack(MAX_WASM_STACK);
        if let Some(n) = pooled {
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .total_stacks(n)
                .max_memory_size(runbook_core::manifest::MAX_MEMORY_MIB as usize * 1024 * 1024)
                .linear_memory_keep_resident(2 << 20)
                .table_keep_resident(64 << 10)
                // Reset only the pages a step dirtied (Linux 6.7+'s
                // PAGEMAP_SCAN), not the whole kept-resident prefix: a
                // built-in's memory starts at 17 pages (its 1 MiB stack)
                // and a step touches a few dozen, so without it every
                // teardown wrote over a megabyte. Off where unsupported.
                .pagemap_scan(wasmtime::Enabled::Auto);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let n = pooled.unwrap_or(DEFAULT_INSTANCES);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch ticker")?;
        let cache_at = cache_dir.map(|d| {
            let mut h = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            env!("CARGO_PKG_VERSION").hash(&mut h);
            (d, format!("{:016x}", h.finish()))
        });
        Ok(Arc::new(Self {
            engine,
            cache_at,
            cache: std::sync::OnceLock::new(),
            compiled: Mutex::new(HashMap::new()),
            linkers: Mutex::new(HashMap::new()),
            pres: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(n as usize)),
        }))
    }

    /// Waits for a free instance slot; the step holds it until it ends.
    pub async fn instance_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed")
    }

    /// The linker for steps granted `interfaces`, built once per process.
    pub fn linker(&self, interfaces: &[Interface]) -> Result<Arc<Linker<StepState>>> {
        let mut linkers = self.linkers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = linkers.get(interfaces) {
            return Ok(l.clone());
        }
        let l = Arc::new(runbook_capabilities::registry::linker_for(
            &self.engine,
            interfaces.iter().copied(),
        )?);
        linkers.insert(interfaces.to_vec(), l.clone());
        Ok(l)
    }

    /// The instance template for component `digest` linked with exactly
    /// `interfaces`, built once per process.
    pub fn instance_pre(
        &self,
        digest: &str,
        component: &Component,
        interfaces: &[Interface],
        api: &str,
    ) -> Result<Pre> {
        let key = (digest.to_string(), interfaces.to_vec());
        if let Some(p) = self
            .pres
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let pre = self
            .linker(interfaces)?
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)?;
        let missing = "the component does not export the `step` world's `run` function";
        let pre = if api == runbook_capabilities::bindings::v0_1::VERSION {
            Pre::V0_1(
                runbook_capabilities::bindings::v0_1::StepPre::new(pre)
                    .map_err(anyhow::Error::from)
                    .context(missing)?,
            )
        } else {
            Pre::Latest(
                StepPre::new(pre)
                    .map_err(anyhow::Error::from)
                    .context(missing)?,
            )
        };
        self.pres
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, pre.clone());
        Ok(pre)
    }

    /// The compiled form of `bytes`, whose sha256 is `digest`.
    pub fn component(
        &self,
        bytes: &[u8],
        digest: &str,
        source: &Path,
    ) -> Result<(Component, Origin)> {
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            return Ok((c.clone(), Origin::Memory));
        }
        if let Some(payload) = self.cache().and_then(|c| c.load(digest)) {
            // SAFETY: `load` verified the entry's HMAC, under this user's
            // private key, over `digest` (the sha256 of the component bytes
            // read on this run) and these exact bytes: this host compiled
            // them from this component (see `crate::cache`). An entry wasmtime
            // still rejects is recompiled below.
            if let Ok(c) = unsafe { Component::deserialize(&self.engine, &payload) } {
                self.remember(digest, &c);
                return Ok((c, Origin::DiskCache));
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            // wasmparser's own message can span many lines of byte dumps.
            let e = anyhow::Error::from(e);
            let cause = e.root_cause().to_string();
            let cause = cause.lines().next().unwrap_or_default();
            let cause = cause.split(" - expected=").next().unwrap_or_default();
            runbook_core::error::hinted(
                format!("`{}` is not a valid WebAssembly component: {cause}", source.display()),
                "step plugins are components built with `cargo build --target wasm32-wasip2`; see plugins/README.md",
            )
        })?;
        if let Some(cache) = self.cache()
            && let Ok(bytes) = component.serialize()
        {
            cache.store(digest, &bytes);
        }
        self.remember(digest, &component);
        Ok((component, Origin::Compiled))
    }

    fn cache(&self) -> Option<&crate::cache::DiskCache> {
        self.cache
            .get_or_init(|| {
                let (base, engine) = self.cache_at.as_ref()?;
                crate::cache::open_or_warn(base, engine)
            })
            .as_ref()
    }

    /// The compiled form of a built-in plugin.
    pub fn builtin_component(&self, b: &crate::builtin::Builtin) -> Result<(Component, Origin)> {
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(b.sha256)
        {
            return Ok((c.clone(), Origin::Memory));
        }
        let (c, origin) = b.component(&self.engine)?;
        self.remember(b.sha256, &c);
        Ok((c, origin))
    }

    fn remember(&self, digest: &str, c: &Component) {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string(), c.clone());
    }
}

/// The default compiled-component cache: `$RUNBOOK_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/runbook`, else `~/.cache/runbook`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RUNBOOK_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("runbook"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("runbook"))
}
