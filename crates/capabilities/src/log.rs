//! `runbook:host/log`: structured lines into the step's timeline. Always
//! linked; needs no grant and touches no backend. Bounded like everything
//! a guest hands the host: lines per step, fields per line, and the size
//! of each part (`limits`); crossing a bound ends the step.

use crate::bindings::runbook::host::log as wit;
use crate::bindings::runbook::host::log::Level;
use crate::bindings::v0_1::runbook::host as v0_1;
use crate::bindings::{Pair, convert};
use crate::limits::{self, LimitExceeded};
use crate::state::{LogLine, StepState};
use wasmtime::component::{HasSelf, Linker};

impl wit::Host for StepState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Pair>,
    ) -> wasmtime::Result<()> {
        let too_big = fields.len() > limits::MAX_LOG_FIELDS
            || message.len() > limits::MAX_LOG_TEXT
            || fields
                .iter()
                .any(|p| p.key.len() > limits::MAX_LOG_KEY || p.value.len() > limits::MAX_LOG_TEXT);
        if too_big {
            return Err(self.limit(LimitExceeded::new(
                "log",
                format!(
                    "a log line may have at most {} fields, keys of {} bytes and text of {} KiB",
                    limits::MAX_LOG_FIELDS,
                    limits::MAX_LOG_KEY,
                    limits::MAX_LOG_TEXT / 1024
                ),
            )));
        }
        if self.shared.trail().logs.len() >= limits::MAX_LOG_LINES {
            return Err(self.limit(LimitExceeded::new(
                "log",
                format!("a step may log at most {} lines", limits::MAX_LOG_LINES),
            )));
        }
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let size = message.len()
            + fields
                .iter()
                .map(|p| p.key.len() + p.value.len())
                .sum::<usize>();
        let line = LogLine {
            level: level.into(),
            message,
            fields: fields.into_iter().map(|p| (p.key, p.value)).collect(),
        };
        self.keep(size, |trail| trail.logs.push(line))
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

/// `log` of contract 0.1.0, forwarded to the latest.
impl v0_1::log::Host for StepState {
    async fn log(
        &mut self,
        level: v0_1::log::Level,
        message: String,
        fields: Vec<v0_1::types::Pair>,
    ) -> wasmtime::Result<()> {
        wit::Host::log(self, convert(level)?, message, convert(fields)?).await
    }
}

#[cfg(test)]
mod tests {
    use crate::bindings::Pair;
    use crate::bindings::runbook::host::log::Host;
    use crate::bindings::runbook::host::log::Level;
    use crate::limits::LimitExceeded;
    use crate::testing::state;

    #[tokio::test]
    async fn a_flood_of_log_keys_ends_the_step() {
        let mut st = state("");
        st.log(Level::Info, "ok".into(), vec![]).await.unwrap();
        let huge = vec![Pair {
            key: "k".repeat(4 << 20),
            value: String::new(),
        }];
        let err = st.log(Level::Info, "x".into(), huge).await.unwrap_err();
        assert_eq!(err.downcast_ref::<LimitExceeded>().unwrap().limit, "log");
        assert_eq!(st.shared.trail().logs.len(), 1);
    }

    #[tokio::test]
    async fn log_lines_are_bounded() {
        let mut st = state("");
        for _ in 0..crate::limits::MAX_LOG_LINES {
            st.log(Level::Debug, "line".into(), vec![]).await.unwrap();
        }
        assert!(
            st.log(Level::Debug, "one more".into(), vec![])
                .await
                .is_err()
        );
    }
}
