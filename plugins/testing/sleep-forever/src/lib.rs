//! Sleeps for an hour in a WASI host call, where epoch interruption cannot
//! reach it: the host must still end the step at its deadline.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, outcome};

struct SleepForever;

impl Step for SleepForever {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        outcome("escaped").summary("slept through the deadline")
    }
}

runbook_sdk::export_step!(SleepForever);
