//! Never returns: the host's deadline must end it.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step};

struct SpinForever;

impl Step for SpinForever {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

runbook_sdk::export_step!(SpinForever);
