use runbook_core::exit::Exit;
use runbook_host::cli::{Cli, Command};
use runbook_host::color::{self, ERROR, HINT};
use std::process::ExitCode;

fn main() -> ExitCode {
    runbook_journal::failpoints_from_env();
    let cli = runbook_host::cli::parse();
    color::init(cli.color);
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            anstream::eprintln!("{} {err}", color::paint(ERROR, "error:"));
            for cause in err.chain().skip(1) {
                anstream::eprintln!("  caused by: {cause}");
            }
            if let Some(hint) = runbook_core::error::hint_of(&err).or(match exit_of(&err) {
                Exit::Untrusted => Some(
                    "`runbook verify-log` on the journal names the line; a journal that was altered is not acted on: see what happened with `runbook show`, then start a new run of the incident with `--new`",
                ),
                Exit::Unrecorded => Some(
                    "free the journal's disk (or reach its store), then continue with `runbook resume RUN_ID`",
                ),
                _ => None,
            }) {
                anstream::eprintln!("{} {hint}", color::paint(HINT, "hint:"));
            }
            exit_of(&err).into()
        }
    }
}

/// An error's exit status: its own for a journal that was altered (8) or
/// could not be written (9), else invalid input (2).
fn exit_of(err: &anyhow::Error) -> Exit {
    use runbook_journal::{chain::Untrusted, log::Unrecorded};
    if err.chain().any(|e| e.downcast_ref::<Untrusted>().is_some()) {
        Exit::Untrusted
    } else if err
        .chain()
        .any(|e| e.downcast_ref::<Unrecorded>().is_some())
    {
        Exit::Unrecorded
    } else {
        Exit::Invalid
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    // One run's steps are futures on this thread; blocking work (terminal
    // prompts, file locks) goes to tokio's blocking pool. Many runs at once
    // (`bench`) use every core.
    let rt = match &cli.command {
        Command::Worker(_) | Command::Serve(_) | Command::Console(_) => {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
        }
        Command::Bench(args) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                b.worker_threads(n.max(1));
            }
            b.enable_all().build()?
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    rt.block_on(runbook_host::commands::dispatch(cli.command))
}
