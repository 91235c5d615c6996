use runbook_core::exit::Exit;
use runbook_host::cli::{Cli, Command};
use runbook_host::color::{self, ERROR, HINT};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = runbook_host::cli::parse();
    color::init(cli.color);
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            anstream::eprintln!("{} {err}", color::paint(ERROR, "error:"));
            for cause in err.chain().skip(1) {
                anstream::eprintln!("  caused by: {cause}");
            }
            if let Some(hint) = runbook_core::error::hint_of(&err) {
                anstream::eprintln!("{} {hint}", color::paint(HINT, "hint:"));
            }
            Exit::Invalid.into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    // One run's steps are futures on this thread; blocking work (terminal
    // prompts, file locks) goes to tokio's blocking pool. Many runs at once
    // (`bench`) use every core.
    let rt = match &cli.command {
        Command::Worker(_) | Command::Serve(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
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
