//! Command-line arguments. The `///` docs are the help text: a command's
//! first line is what `runbook --help` lists, the rest what
//! `runbook COMMAND --help` adds. Commands are listed in the groups people
//! look for them in ([`GROUPS`]), which a test keeps complete.

mod authoring;
mod fleet;
mod reviewing;
mod running;
mod shell;

pub use authoring::*;
pub use fleet::*;
pub use reviewing::*;
pub use running::*;
pub use shell::*;

use clap::{ColorChoice, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Run incident runbooks whose steps are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "runbook", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// When to use colors: `auto` (on a terminal, unless `NO_COLOR` is
    /// set), `always` or `never`.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorChoice::Auto
    )]
    pub color: ColorChoice,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook against simulated or real backends
    ///
    /// Exit status: 0 resolved, 1 escalated, 2 invalid input (nothing
    /// ran), 3 a step ended in a way the runbook does not route, 4 stopped
    /// before a mutation nobody approved, 5 blocked by another run (of the
    /// same incident, or holding what had to change), 7 the run did not
    /// take the path its scenario's `[expect]` names, 8 the journal of a
    /// run resumed was altered, 9 the journal could not be written, 10 a
    /// halt (`runbook halt`) stopped it before a change.
    Run(RunArgs),
    /// Continue a run that crashed, was stopped, or waits for an approval
    ///
    /// Ended steps are not run again, and a change whose result the
    /// journal lacks is looked for in the backend before anything is
    /// issued again. Exit status as for `run`.
    Resume(ResumeArgs),
    /// Stop new changes in every run that shares the store, now
    ///
    /// Each run of the runbook (`--runbook ID`) or of every runbook
    /// (`--all`) stops before its next change to a system and ends
    /// `halted` (exit status 10), wherever it runs: a state directory's
    /// runs, or a fleet's (`--nats`) on every worker and CLI. Pages and
    /// messages still go out. A change that read the store before the halt
    /// was written may still be made. Recorded with who, where, when and
    /// `--reason`. Without `--all` or `--runbook`: the halts in force and
    /// the runs they stopped.
    Halt(HaltArgs),
    /// Lift halts and continue the runs they stopped
    ///
    /// Every halt, or one runbook's (`--runbook ID`). A fleet's stopped
    /// runs are queued for its workers; a state directory's are continued
    /// here, one after another, as `runbook resume` would (with what they
    /// were started with). Recorded like the halt.
    ///
    /// Exit status: that of the first run continued here that did not
    /// resolve (as for `resume`), else 0; 3 when a fleet's run could not
    /// be queued (it stays listed).
    ResumeAll(ResumeAllArgs),
    /// Show a run's report from its journal
    ///
    /// Also of a run that crashed or waits for an approval.
    Show(ShowArgs),
    /// List recent runs and how they ended
    Runs(RunsArgs),
    /// Check that a runbook takes each scenario's expected path
    ///
    /// Runs the runbook against each of its scenarios (default: those with
    /// an `[expect]` in `scenarios/` beside it) and checks that each takes
    /// its expected path and ends in its expected status. Exit status: 0
    /// all did, 7 one did not (with where it went instead), 2 invalid
    /// input.
    Test(TestArgs),
    /// Run one plugin alone against a simulated scenario
    ///
    /// With the inputs given, under its manifest's grant, and print what
    /// it did. Plugins come from `--plugins` (there is no runbook to look
    /// beside), then the built-in ones. Exit status 0 when it returned one
    /// of its declared outcomes.
    Step(StepArgs),
    /// Measure many runs of a runbook at once, in this process
    ///
    /// Executes the runs against a simulated scenario and reports steps/s,
    /// runs/s, the cost of a step (p50/p99) and peak memory.
    Bench(BenchArgs),
    /// Validate a runbook, its plugins and grants, running nothing
    ///
    /// Loads the manifests, reads (and links) the components and checks
    /// every step's grant, as a run would before its first step.
    Check(CheckArgs),
    /// Write (or check) `runbook.lock`: what each step runs and may touch
    ///
    /// Per step: the plugin, its version and component digest, the
    /// effective grants, the limits and the resources its inputs name.
    /// `--locked` on other commands refuses anything else.
    Lock(LockArgs),
    /// Show what a change lets steps do that they could not before
    ///
    /// Widened reach first, then what changed with the same reach, then
    /// what was given up, compared with `runbook.lock` or the lock at a git
    /// revision. Exit status: 0 nothing widened, 6 something widened.
    Review(ReviewArgs),
    /// Show each change calendar's state (OPEN or CLOSED) and its next change
    ///
    /// From `calendars.toml` in the policy directory; the organisation's
    /// policies read the same states (`context.calendars`).
    Calendar(CalendarArgs),
    /// Validate a policy directory and list its policies, or print the schema
    ///
    /// Each policy's id, effect, file and line, and the calendars; with
    /// `--schema`, the Cedar schema every policy is validated against.
    Policies(PoliciesArgs),
    /// Show a plugin's imports, grants, limits and digest side by side
    Inspect(InspectArgs),
    /// List the plugins a runbook can use, with their digests
    ///
    /// Those in plugin directories, then the ones built into this binary.
    Plugins(PluginsArgs),
    /// Check a journal's or audit log's hash chain
    ///
    /// Names the first line that was altered, removed or reordered (exit 3
    /// if any).
    VerifyLog(VerifyLogArgs),
    /// Create a minisign key pair for signing plugins
    ///
    /// NAME.key (secret, mode 0600, unencrypted) and NAME.pub.
    Keygen(KeygenArgs),
    /// Sign a plugin's name, version, component digest and manifest
    ///
    /// Into `signatures/KEYID.minisig` beside the manifest. With
    /// `--policies DIR`: the organisation's policy directory instead (the
    /// sha256 of its policy and calendar files), into `DIR/signatures/`.
    Sign(SignArgs),
    /// Scaffold a step plugin in Rust, Python or JavaScript
    ///
    /// Outside this repository: source, manifest (inputs, outcomes,
    /// grants), a runbook and scenarios that exercise it, and tests.
    New(NewArgs),
    /// Build a plugin with the right toolchain and flags
    ///
    /// `DIR`, default `.` or every `plugins/*`; the component goes beside
    /// its manifest.
    Build(BuildArgs),
    /// Push plugins to an OCI registry and pull them by digest
    Plugin(PluginArgs),
    /// Ask the fleet's workers to run a runbook for an incident
    ///
    /// Over NATS JetStream. The incident key deduplicates: the same key
    /// submitted again (an alarm that fires five times) is one run.
    Submit(SubmitArgs),
    /// Run requests from NATS JetStream, several at once
    ///
    /// A request is acknowledged when its run has ended; a worker that
    /// dies has its runs continued elsewhere from their journals. Stops on
    /// SIGTERM: runs in hand finish within `--grace`, the rest are handed
    /// back.
    Worker(WorkerArgs),
    /// Approve (or deny) the change a parked run waits for
    ///
    /// A step with an `approval:` rule (M of N people, not the run's
    /// starter) counts decisions made `--as` a person of the approvers
    /// file, each recorded in the run's journal; once the rule is met, a
    /// fleet run is queued to continue (a local one: `runbook resume`).
    /// Without a rule, a fleet run is approved and queued at once.
    Approve(ApproveArgs),
    /// Serve the responder console: runs, timelines, approvals in a browser
    ///
    /// The run list (filter by status, runbook, incident, age), each run's
    /// timeline as it happens, its postmortem, and for a change parked
    /// under an approval rule exactly what it will do, with Approve and
    /// Deny for people of the approvers file (signed in with their token,
    /// or named by a trusted reverse proxy). Loopback by default.
    Console(ConsoleArgs),
    /// Make an approver's token and its approvers-file entry
    ///
    /// The token is printed once, to be given to the person; the entry
    /// holds only its Argon2id hash.
    ApproverToken(ApproverTokenArgs),
    /// List the fleet's runs parked for an approval
    ///
    /// Each with its step and change, since when it waits, its deadline,
    /// and its state: waiting, being escalated (claimed), or escalated
    /// without its journal (altered) and whether that page arrived.
    Parked(ParkedArgs),
    /// Take SNS alarms and Alertmanager alerts; submit the runs they map to
    ///
    /// SNS deliveries over HTTP (`POST /sns`) are checked as AWS documents
    /// (signature version 2, certificate from an SNS host of AWS),
    /// subscriptions confirmed, and only the triggers file's `topics`
    /// accepted. Alertmanager's webhook (`POST /alertmanager`, payload
    /// version 4) is taken when the triggers file has `[alertmanager]`,
    /// with the bearer token or basic authentication it names. The
    /// triggers file maps alarms and alerts to runbooks. 503 asks the
    /// sender to deliver again (NATS away).
    Serve(ServeArgs),
    /// Print a shell's completion script
    ///
    /// e.g. `runbook completions bash > ~/.local/share/bash-completion/completions/runbook`.
    Completions(CompletionsArgs),
    /// Print the man page (or write one per command into a directory)
    Man(ManArgs),
}

/// The groups `runbook --help` lists the commands in, in order.
pub const GROUPS: &[(&str, &[&str])] = &[
    (
        "Running",
        &[
            "run",
            "resume",
            "halt",
            "resume-all",
            "show",
            "runs",
            "test",
            "step",
            "bench",
        ],
    ),
    (
        "Reviewing",
        &[
            "check",
            "lock",
            "review",
            "policies",
            "calendar",
            "inspect",
            "plugins",
            "verify-log",
            "keygen",
            "sign",
        ],
    ),
    ("Authoring", &["new", "build", "plugin"]),
    (
        "Fleet",
        &[
            "submit",
            "worker",
            "approve",
            "approver-token",
            "parked",
            "serve",
            "console",
        ],
    ),
    ("Shell", &["completions", "man"]),
];

/// The command line as `runbook` parses it: clap's, with the commands
/// listed by group.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let header = *cmd.get_styles().get_header();
    let literal = *cmd.get_styles().get_literal();
    let mut groups = String::new();
    for (heading, names) in GROUPS {
        groups.push_str(&format!("{header}{heading}:{header:#}\n"));
        for name in *names {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            groups.push_str(&format!("  {literal}{name:<12}{literal:#} {about}\n"));
        }
        groups.push('\n');
    }
    cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}{header}Options:{header:#}\n{{options}}\n\nSee `runbook COMMAND --help` for what a command does in full.\n"
    ))
}

/// Parses the process's arguments; exits with clap's message on an error
/// (in color only where `--color` and the terminal allow).
pub fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let color = color_flag(&args);
    let matches = command().color(color).get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

/// `--color WHEN` as written, before clap has parsed anything (its own
/// messages are colored by it too).
fn color_flag(args: &[std::ffi::OsString]) -> ColorChoice {
    let mut choice = ColorChoice::Auto;
    let mut next_is_value = false;
    for a in args.iter().filter_map(|a| a.to_str()) {
        let value = if next_is_value {
            next_is_value = false;
            Some(a)
        } else if a == "--color" {
            next_is_value = true;
            None
        } else {
            a.strip_prefix("--color=")
        };
        match value {
            Some("always") => choice = ColorChoice::Always,
            Some("never") => choice = ColorChoice::Never,
            Some(_) => choice = ColorChoice::Auto,
            None => {}
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_in_exactly_one_group() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        let grouped: Vec<&str> = GROUPS.iter().flat_map(|(_, n)| n.iter().copied()).collect();
        for n in &names {
            assert_eq!(
                grouped.iter().filter(|g| *g == n).count(),
                1,
                "`{n}` must be in one group of `GROUPS`"
            );
        }
        for g in &grouped {
            assert!(names.contains(g), "`{g}` in `GROUPS` is not a command");
        }
    }

    #[test]
    fn each_command_is_summed_up_in_one_short_line() {
        let cmd = Cli::command();
        for c in cmd.get_subcommands() {
            let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "`{}` has no summary", c.get_name());
            assert!(
                !about.contains('\n') && about.len() <= 70,
                "`{}`'s summary is longer than a line: {about:?}",
                c.get_name()
            );
        }
        command().debug_assert();
    }

    #[test]
    fn the_color_flag_is_read_before_parsing() {
        let args = |s: &str| -> Vec<std::ffi::OsString> { s.split(' ').map(Into::into).collect() };
        assert_eq!(color_flag(&args("runbook run x")), ColorChoice::Auto);
        assert_eq!(
            color_flag(&args("runbook --color never run x")),
            ColorChoice::Never
        );
        assert_eq!(
            color_flag(&args("runbook run x --color=always")),
            ColorChoice::Always
        );
    }
}
