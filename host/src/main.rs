use clap::Parser;
use runbook_host::cli::{Cli, Command};
use runbook_host::commands;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if let Some(hint) = runbook_host::error::hint_of(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(commands::EXIT_INVALID)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => commands::run(args),
        Command::Check(args) => commands::check(args),
        Command::Inspect(args) => commands::inspect(args),
        Command::Plugins(args) => commands::plugins(args),
    }
}
