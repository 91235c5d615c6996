//! Allocates 1 GiB in 16 MiB pieces, touching each: the host's memory limit
//! must stop it.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, outcome};

struct AllocBomb;

impl Step for AllocBomb {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        for _ in 0..64 {
            hoard.push(vec![1u8; 16 << 20]);
        }
        let total: usize = hoard.iter().map(Vec::len).sum();
        outcome("escaped").summary(format!("allocated {total} bytes"))
    }
}

runbook_sdk::export_step!(AllocBomb);
