//! Reads environment variables and arguments (and notes the working
//! directory, which names nothing on the host), and
//! writes to stdout and stderr (which the host must capture, not inherit).
//! `contained` when it sees no environment at all, `escaped` otherwise.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, outcome};

struct EscapeEnv;

impl Step for EscapeEnv {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        println!("escape-env: hello on stdout");
        eprintln!("escape-env: hello on stderr");
        let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        let args: Vec<String> = std::env::args().collect();
        let cwd = std::env::current_dir().map(|p| p.display().to_string());
        let mut escaped = Vec::new();
        if !vars.is_empty() {
            escaped.push(format!("env: {}", vars.join(",")));
        }
        if !args.is_empty() {
            escaped.push(format!("args: {}", args.join(" ")));
        }
        let label = if escaped.is_empty() {
            "contained"
        } else {
            "escaped"
        };
        outcome(label)
            .fact("escaped", escaped.join("; "))
            .fact("cwd", cwd.unwrap_or_else(|e| format!("error: {e}")))
            .fact(
                "home",
                std::env::var("HOME").unwrap_or_else(|e| format!("error: {e}")),
            )
            .summary(format!("saw {} env vars, {} args", vars.len(), args.len()))
    }
}

runbook_sdk::export_step!(EscapeEnv);
