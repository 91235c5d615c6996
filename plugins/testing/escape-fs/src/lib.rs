//! Tries to read and write host files. `contained` when every attempt fails,
//! `escaped` (with what worked) otherwise.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, outcome};

struct EscapeFs;

impl Step for EscapeFs {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let mut escaped = Vec::new();
        let mut errors = Vec::new();
        for path in [
            "/etc/passwd",
            "/proc/self/environ",
            "./Cargo.toml",
            "../../Cargo.toml",
        ] {
            match std::fs::read(path) {
                Ok(bytes) => escaped.push(format!("read {path} ({} bytes)", bytes.len())),
                Err(e) => errors.push(format!("read {path}: {e}")),
            }
        }
        match std::fs::write("/tmp/runbook-escape-fs", b"escaped") {
            Ok(()) => escaped.push("wrote /tmp/runbook-escape-fs".to_string()),
            Err(e) => errors.push(format!("write /tmp/runbook-escape-fs: {e}")),
        }
        match std::fs::read_dir("/") {
            Ok(_) => escaped.push("listed /".to_string()),
            Err(e) => errors.push(format!("list /: {e}")),
        }
        let label = if escaped.is_empty() {
            "contained"
        } else {
            "escaped"
        };
        outcome(label)
            .fact("escaped", escaped.join("; "))
            .fact("errors", errors.join("; "))
            .summary(format!(
                "{} file attempts failed, {} succeeded",
                errors.len(),
                escaped.len()
            ))
    }
}

runbook_sdk::export_step!(EscapeFs);
