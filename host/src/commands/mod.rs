//! What each subcommand does, one module each. Each returns the process
//! exit status ([`Exit`]); errors go to `main`, which prints them with
//! their hint and exits [`Exit::Invalid`].

mod approve;
mod bench;
mod check;
mod console;
mod fleet;
mod guardrails;
mod halt;
mod inspect;
mod journal;
mod kit;
mod lock;
mod oci;
mod plugins;
mod review;
mod run;
mod shell;
mod sign;
mod test;
mod traces;

use crate::cli::{Command, Search, Sources};
use anyhow::Result;
pub use bench::bench;
pub use check::check;
pub use inspect::inspect;
pub use journal::{runs, show, verify_log};
pub use lock::lock;
pub use plugins::plugins;
pub use review::review;
pub use run::{resume, run};
use runbook_core::exit::Exit;
pub use sign::{keygen, sign};
use std::path::Path;
pub use test::{step, test};

/// Runs one subcommand.
pub async fn dispatch(command: Command) -> Result<Exit> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Check(args) => check(args),
        Command::Test(args) => test(args).await,
        Command::Step(args) => step(args).await,
        Command::Inspect(args) => inspect(args),
        Command::Plugins(args) => plugins(args),
        Command::Bench(args) => bench(args).await,
        Command::Lock(args) => lock(args),
        Command::Plugin(args) => oci::plugin(args).await,
        Command::New(args) => kit::new(args),
        Command::Build(args) => kit::build(args),
        Command::Review(args) => review(args),
        Command::Calendar(args) => guardrails::calendar(args),
        Command::Policies(args) => guardrails::policies(args),
        Command::Keygen(args) => keygen(args),
        Command::Sign(args) => sign(args),
        Command::Resume(args) => resume(args).await,
        Command::Halt(args) => halt::halt(args),
        Command::ResumeAll(args) => halt::resume_all(args).await,
        Command::Show(args) => show(args),
        Command::Submit(args) => fleet::submit(args),
        Command::Worker(args) => fleet::worker(args).await,
        Command::Approve(args) => approve::approve(args),
        Command::ApproverToken(args) => approve::approver_token(args),
        Command::Console(args) => console::console(args).await,
        Command::Parked(args) => fleet::parked(args),
        Command::Serve(args) => fleet::serve(args).await,
        Command::Runs(args) => runs(args),
        Command::VerifyLog(args) => verify_log(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    }
}

/// `writeln!` into the command's output, which is printed in one go.
macro_rules! say {
    ($out:ident, $($fmt:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($fmt)*);
    }};
}
pub(crate) use say;

/// Prints a command's output (its styles only where `--color` and the
/// terminal allow); a reader that went away (`| head`) is fine.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = anstream::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Where `runbook`'s plugins are found (`--plugins`, `--components`,
/// `--trust`, `--locked`).
fn sources(s: &Sources, runbook: &Path) -> Result<runbook_engine::sources::Sources> {
    let mut out = search(&s.search, Some(runbook))?;
    out.locked = s.locked;
    Ok(out)
}

/// Where plugins are found, and the trust file for them. Without a
/// runbook: `--plugins`, then the built-in plugins.
fn search(s: &Search, runbook: Option<&Path>) -> Result<runbook_engine::sources::Sources> {
    runbook_engine::sources::Sources::find(&s.to_engine(), runbook)
}
