//! What one step may make the host hold or write, and the memory limiter.
//!
//! A guest's memory is capped by its manifest; these caps bound what it can
//! hand the host on top: arguments, log lines, facts, its summary, captured
//! output, and the audit log. Crossing one ends the step `limit-exceeded`,
//! naming the limit ([`LimitExceeded`], raised as a trap), except captured
//! output, which is cut and marked truncated. Whatever the host keeps of a
//! call's arguments and result is clipped to [`RECORD_STRING`] per string.
//!
//! With these defaults no single step can make the host keep more than a
//! few MiB: 1 MiB of call records and log lines, 64 facts of 4 KiB, 2 × 64
//! KiB of output; what it can make the host hold while a call is made is
//! bounded by its own memory limit (arguments are copied out of it), and
//! 10,000 WASI resources.

use wasmtime::ResourceLimiter;

/// Capability calls per step.
pub const MAX_CALLS: usize = 1000;
/// Bytes of string arguments in one capability call.
pub const MAX_ARG_BYTES: usize = 64 * 1024;
/// Log lines per step, fields per line, and the size of each part.
pub const MAX_LOG_LINES: usize = 200;
pub const MAX_LOG_FIELDS: usize = 32;
pub const MAX_LOG_KEY: usize = 128;
pub const MAX_LOG_TEXT: usize = 4 * 1024;
/// Facts a step may return, and the size of each key and value.
pub const MAX_FACTS: usize = 64;
pub const MAX_FACT_KEY: usize = 128;
pub const MAX_FACT_VALUE: usize = 4 * 1024;
/// The one-line summary.
pub const MAX_SUMMARY: usize = 4 * 1024;
/// Captured stdout, and stderr, per step; more is dropped and the report
/// says the output was truncated.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Bytes of call records and log lines kept for one step (in the report,
/// and the audit log when there is one).
pub const MAX_KEPT_BYTES: usize = 1024 * 1024;
/// Longest string kept of a call's arguments or result in the report and
/// the audit log.
pub const RECORD_STRING: usize = 1024;

/// A step crossed one of the limits above (or its memory or deadline).
#[derive(Debug, Clone)]
pub struct LimitExceeded {
    /// Short name for the `limit` fact: `arguments`, `log`, `facts`, ...
    pub limit: &'static str,
    /// What happened, for the summary.
    pub detail: String,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limit exceeded: {}", self.detail)
    }
}

impl std::error::Error for LimitExceeded {}

impl LimitExceeded {
    pub fn new(limit: &'static str, detail: impl Into<String>) -> Self {
        Self {
            limit,
            detail: detail.into(),
        }
    }

    /// As a trap, which ends the step.
    pub fn trap(self) -> wasmtime::Error {
        wasmtime::Error::new(self)
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), marked `…`.
pub fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A JSON value with every string clipped to [`RECORD_STRING`] and every
/// array or object cut to 64 entries: what the host keeps of a call.
pub fn clip_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(clip(s, RECORD_STRING)),
        Value::Array(a) => Value::Array(a.into_iter().take(64).map(clip_json).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .take(64)
                .map(|(k, v)| (clip(k, RECORD_STRING), clip_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Bytes of strings in a JSON value: what a call's arguments weigh.
pub fn string_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(string_bytes).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + string_bytes(v)).sum(),
        _ => 0,
    }
}

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
