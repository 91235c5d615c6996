//! `runbook:host/log`: structured lines into the step's timeline. Always
//! linked; needs no grant and touches no backend.

use super::{LogLine, StepState};
use crate::bindings::Pair;
use crate::bindings::runbook::host::log::{self as wit, Level};
use wasmtime::component::{HasSelf, Linker};

/// Keeps a chatty step from growing the report without bound.
const MAX_LINES: usize = 200;

impl wit::Host for StepState {
    fn log(&mut self, level: Level, message: String, fields: Vec<Pair>) {
        let mut journal = self.shared.journal();
        if journal.logs.len() >= MAX_LINES {
            return;
        }
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        journal.logs.push(LogLine {
            level: level.into(),
            message: clip(message),
            fields: fields.into_iter().map(|p| (p.key, clip(p.value))).collect(),
        });
    }
}

/// Keeps one line from growing the report without bound.
fn clip(mut s: String) -> String {
    const MAX: usize = 2048;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}
