//! Per-step memory limit. The limiter refuses growth past the limit (the
//! guest sees a failed allocation and usually traps) and remembers that it
//! did, so the host can report `limit-exceeded` rather than a bare trap.

use wasmtime::ResourceLimiter;

pub struct StepLimiter {
    max_memory: usize,
    /// All linear memories of the step together: a component may have
    /// several, and the limit is the step's, not each memory's.
    total: usize,
    /// Set once a growth request was refused.
    pub memory_refused: Option<usize>,
}

impl StepLimiter {
    pub fn new(max_memory: usize) -> Self {
        Self {
            max_memory,
            total: 0,
            memory_refused: None,
        }
    }
}

impl ResourceLimiter for StepLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory {
            self.memory_refused = Some(total);
            return Ok(false);
        }
        self.total = total;
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

    fn instances(&self) -> usize {
        100
    }

    fn memories(&self) -> usize {
        100
    }

    fn tables(&self) -> usize {
        100
    }
}
