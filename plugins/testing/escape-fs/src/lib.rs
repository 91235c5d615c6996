//! Tries to read and write host files. `contained` when every attempt fails,
//! `escaped` (with what worked) otherwise.

use runbook_sdk::{Attempts, Error, Outcome, Pair, RunContext, Step};

struct EscapeFs;

impl Step for EscapeFs {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let mut tries = Attempts::new("file");
        for path in [
            "/etc/passwd",
            "/proc/self/environ",
            "./Cargo.toml",
            "../../Cargo.toml",
        ] {
            tries.note(&format!("read {path}"), std::fs::read(path));
        }
        tries.note(
            "write /tmp/runbook-escape-fs",
            std::fs::write("/tmp/runbook-escape-fs", b"escaped"),
        );
        tries.note("list /", std::fs::read_dir("/"));
        tries.finish()
    }
}

runbook_sdk::export_step!(EscapeFs);
