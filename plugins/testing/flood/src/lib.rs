//! Hands the host far more than it keeps, as input `what` says:
//! `arguments` (a 10 MiB flag key), `log-keys` (250 log lines with a 4 MiB
//! field key each), `facts` (a 50 MiB fact), `summary` (a 50 MiB summary),
//! `output` (100 MiB on stdout and stderr), `calls` (5,000 calls). The host
//! must end the step `limit-exceeded` naming the limit (output: cut and
//! marked truncated) without holding what it was handed.

use runbook_sdk::bindings::runbook::host::log::{self, Level};
use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, flags, outcome};
use std::io::Write;

struct Flood;

const MIB: usize = 1 << 20;

impl Step for Flood {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        match inputs.str("what")? {
            "arguments" => {
                let key = "K".repeat(10 * MIB);
                let _ = flags::get(&key);
                outcome("contained").summary("the host took a 10 MiB argument")
            }
            "log-keys" => {
                let key = "k".repeat(4 * MIB);
                for _ in 0..250 {
                    log::log(
                        Level::Info,
                        "flood",
                        &[Pair {
                            key: key.clone(),
                            value: "v".into(),
                        }],
                    );
                }
                outcome("contained").summary("the host took 250 4 MiB log keys")
            }
            "facts" => outcome("contained")
                .fact("big", "f".repeat(50 * MIB))
                .summary("a 50 MiB fact"),
            "summary" => outcome("contained").summary("s".repeat(50 * MIB)),
            "output" => {
                let chunk = vec![b'o'; MIB];
                for _ in 0..100 {
                    let _ = std::io::stdout().write_all(&chunk);
                    let _ = std::io::stderr().write_all(&chunk);
                }
                outcome("contained").summary("wrote 100 MiB to stdout and stderr")
            }
            "calls" => {
                for _ in 0..5000 {
                    let _ = flags::get("K");
                }
                outcome("contained").summary("made 5,000 calls")
            }
            other => Err(Error::Invalid(format!("unknown `what`: `{other}`"))),
        }
    }
}

runbook_sdk::export_step!(Flood);
