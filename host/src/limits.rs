//! Per-step memory limit. The limiter refuses growth past the limit (the
//! guest sees a failed allocation and usually traps) and remembers that it
//! did, so the host can report `limit-exceeded` rather than a bare trap.

use wasmtime::ResourceLimiter;

pub struct StepLimiter {
    max_memory: usize,
    /// Set once a growth request was refused.
    pub memory_refused: Option<usize>,
}

impl StepLimiter {
    pub fn new(max_memory: usize) -> Self {
        Self {
            max_memory,
            memory_refused: None,
        }
    }
}

impl ResourceLimiter for StepLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
