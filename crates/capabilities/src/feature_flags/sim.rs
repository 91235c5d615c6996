//! Simulated flags: a scenario's `[flags]` table, changed by `set`.

use super::FlagsBackend;
use crate::bindings::Error;
use crate::sim::World;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How long a simulated flag call takes.
const CALL_MS: u64 = 20;

pub struct SimFlags {
    flags: Mutex<BTreeMap<String, String>>,
    world: Arc<World>,
}

impl SimFlags {
    pub fn new(flags: BTreeMap<String, String>, world: Arc<World>) -> Self {
        Self {
            flags: Mutex::new(flags),
            world,
        }
    }

    /// The flag's value now, for other simulations' conditions.
    pub fn value(&self, key: &str) -> Option<String> {
        self.flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

#[async_trait::async_trait]
impl FlagsBackend for SimFlags {
    async fn get(&self, key: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        self.world.advance(CALL_MS);
        Ok(self.value(key))
    }

    async fn set(
        &self,
        key: &str,
        value: &str,
        _deadline: Instant,
    ) -> Result<Option<String>, Error> {
        self.world.advance(CALL_MS);
        Ok(self
            .flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value.to_string()))
    }
}
