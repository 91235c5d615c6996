//! The command line as people expect it (ripgrep, uv, cargo): `--help`
//! lists each command in one line, grouped; completions and a man page;
//! colors only where wanted; progress where a terminal is attached.

mod common;

use common::{RB0031, run, runbook};
use std::process::{Command, Stdio};

const SIM: &str = "runbooks/scenarios/session-store-outage.toml";

#[test]
fn help_lists_every_command_once_in_a_line_by_group() {
    let out = run(&["--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let help = out.stdout;
    for group in ["Running:", "Reviewing:", "Authoring:", "Fleet:", "Shell:"] {
        assert!(help.contains(group), "no `{group}` in:\n{help}");
    }
    for command in [
        "run",
        "resume",
        "show",
        "runs",
        "test",
        "step",
        "bench",
        "check",
        "lock",
        "review",
        "inspect",
        "plugins",
        "verify-log",
        "keygen",
        "sign",
        "new",
        "build",
        "plugin",
        "submit",
        "worker",
        "approve",
        "serve",
        "completions",
        "man",
    ] {
        let lines: Vec<&str> = help
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(command))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "`{command}` listed {} times:\n{help}",
            lines.len()
        );
        assert!(
            lines[0].len() <= 90,
            "`{command}` takes more than a line: {}",
            lines[0]
        );
    }
    // The details are in the command's own help.
    assert!(!help.contains("Exit status"), "{help}");
    let run_help = run(&["run", "--help"]).stdout;
    assert!(run_help.contains("Exit status: 0 resolved"), "{run_help}");
    assert!(run_help.contains("--sim <SCENARIO>"), "{run_help}");
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        for word in ["verify-log", "--incident-start", "runbook"] {
            assert!(
                out.stdout.contains(word),
                "{shell} completions lack `{word}`"
            );
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("possible values"), "{}", out.stderr);
}

#[test]
fn the_man_page_is_printed_or_written_per_command() {
    let out = run(&["man"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH runbook 1"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("verify\\-log"), "{}", out.stdout);
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for page in [
        "runbook.1",
        "runbook-run.1",
        "runbook-plugin-pull.1",
        "runbook-verify-log.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let run_page = std::fs::read_to_string(dir.path().join("runbook-run.1")).unwrap();
    assert!(run_page.contains("Exit status"), "{run_page}");
}

/// Colors follow `--color`, then `NO_COLOR`, then whether the stream is a
/// terminal (here it is not): `always` colors errors and the status line,
/// `never` and `NO_COLOR` never do.
#[test]
fn colors_only_where_asked_for() {
    let esc = '\u{1b}';
    let missing = ["check", "no-such-runbook.md"];
    let plain = run(&missing);
    assert_eq!(plain.code, 2);
    assert!(plain.stderr.starts_with("error: "), "{}", plain.stderr);
    assert!(!plain.stderr.contains(esc), "{:?}", plain.stderr);
    let forced = run(&["--color", "always", "check", "no-such-runbook.md"]);
    assert_eq!(forced.code, 2);
    assert!(forced.stderr.contains(esc), "{:?}", forced.stderr);
    let no_color = common::output(
        runbook()
            .env("NO_COLOR", "1")
            .env("CLICOLOR_FORCE", "1")
            .args(["check", "no-such-runbook.md"]),
    );
    assert!(!no_color.stderr.contains(esc), "{:?}", no_color.stderr);
    let never = run(&["--color", "never", "--help"]);
    assert!(!never.stdout.contains(esc), "{:?}", never.stdout);
    // A run's status line, whole, in color; what it says is unchanged.
    let colored = run(&["run", RB0031, "--sim", SIM, "--color", "always"]);
    assert_eq!(colored.code, 0, "{}", colored.stderr);
    let status = colored
        .stdout
        .lines()
        .find(|l| l.contains("status: resolved"))
        .unwrap();
    assert!(status.starts_with(esc), "{status:?}");
    let uncolored = run(&["run", RB0031, "--sim", SIM]);
    assert!(!uncolored.stdout.contains(esc), "{:?}", uncolored.stdout);
}

/// On a terminal (`script` gives `bench` one), its runs are counted as
/// they end; where stderr is not a terminal nothing of the sort appears.
#[test]
fn progress_is_shown_on_a_terminal_only() {
    let command = format!(
        "{} bench {RB0031} --sim {SIM} --runs 40 --concurrency 8",
        env!("CARGO_BIN_EXE_runbook")
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(common::root())
        .env(
            "RUNBOOK_CACHE_DIR",
            common::root().join("target/test-cache"),
        )
        .env("RUNBOOK_STATE_DIR", common::fresh_state_dir())
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) runs the CLI on a terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(screen.contains("40/40 runs"), "{screen}");
    assert!(screen.contains("steps/s"), "{screen}");
    let piped = run(&[
        "bench",
        RB0031,
        "--sim",
        SIM,
        "--runs",
        "40",
        "--concurrency",
        "8",
    ]);
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(!piped.stderr.contains("runs ("), "{}", piped.stderr);
    assert!(!piped.stdout.contains("40/40"), "{}", piped.stdout);
}

/// `bench` checks the work it timed: each run against the scenario's
/// `[expect]`. Runs that went elsewhere are not passed off as figures of
/// the path the scenario names: exit 7, saying how many.
#[test]
fn bench_fails_when_its_runs_do_not_take_the_expected_path() {
    let args = |sim| {
        [
            "bench",
            RB0031,
            "--sim",
            sim,
            "--runs",
            "30",
            "--concurrency",
            "4",
        ]
    };
    let met = run(&args(SIM));
    assert_eq!(met.code, 0, "{}", met.stderr);
    assert!(
        met.stdout
            .contains("30 of 30 runs took the scenario's [expect]ed path"),
        "{}",
        met.stdout
    );
    let unmet = run(&args("tests/fixtures/scenarios/expect-not-met.toml"));
    assert_eq!(unmet.code, 7, "{}\n{}", unmet.stdout, unmet.stderr);
    assert!(
        unmet.stdout.contains("0 of 30 runs took"),
        "{}",
        unmet.stdout
    );
    assert!(
        unmet
            .stderr
            .contains("30 of 30 runs did not take the scenario's [expect]ed path"),
        "{}",
        unmet.stderr
    );
    assert!(unmet.stderr.contains("hint: "), "{}", unmet.stderr);
}
