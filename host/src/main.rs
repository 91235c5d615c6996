use clap::Parser;
use runbook_host::cli::{Cli, Command};
use runbook_host::exit::Exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if let Some(hint) = runbook_host::error::hint_of(&err) {
                eprintln!("hint: {hint}");
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
