//! Steps under an approval rule, for the tests: RB-0031 with a rule on
//! its rollback, and an approvers file whose people's tokens were made by
//! `runbook approver-token`.

use super::{Run, output, runbook};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// RB-0031 with `rule` (YAML under `approval:`) on its rollback step,
/// written into `dir`; its path.
pub fn ruled(dir: &Path, rule: &str) -> String {
    let text = std::fs::read_to_string(super::root().join(super::RB0031)).unwrap();
    let grants =
        "        mutate: [production/auth-service]\n    on:\n      rolled-back: verify-rollback";
    assert_eq!(text.matches(grants).count(), 1);
    let rule: String = rule.lines().map(|l| format!("      {l}\n")).collect();
    let text = text.replace(
        grants,
        &grants.replace("    on:\n", &format!("    approval:\n{rule}    on:\n")),
    );
    let path = dir.join("RB-0031-ruled.md");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// An approvers file and each person's token, made by `runbook
/// approver-token`: alice, bob and erin in `sre`; carol in `db`; dave in
/// `sre`, who logs in as `dsmith` (and starts the runs).
pub struct People {
    pub file: PathBuf,
    pub tokens: BTreeMap<&'static str, String>,
}

pub const STARTER: &str = "dsmith";

/// Each person's Slack user id: `U` and their name in capitals.
pub fn slack_id(name: &str) -> String {
    format!("U{}", name.to_uppercase())
}

pub fn people(dir: &Path) -> People {
    let mut text = String::new();
    let mut tokens = BTreeMap::new();
    for (name, groups, logins) in [
        ("alice", "[\"sre\"]", "[]"),
        ("bob", "[\"sre\"]", "[]"),
        ("erin", "[\"sre\"]", "[]"),
        ("carol", "[\"db\"]", "[]"),
        ("dave", "[\"sre\"]", "[\"dsmith\"]"),
    ] {
        let (entry, token) = entry(name, groups, logins);
        text.push_str(&entry);
        text.push_str("\n\n");
        tokens.insert(name, token);
    }
    let file = dir.join("approvers.toml");
    std::fs::write(&file, text).unwrap();
    People { file, tokens }
}

/// One person's approvers-file entry and token, made by `runbook
/// approver-token NAME`, with `groups` and `logins` (TOML lists).
fn entry(name: &str, groups: &str, logins: &str) -> (String, String) {
    let out = output(runbook().args(["approver-token", name]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("# rbk_"))
        .map(|t| format!("rbk_{t}"))
        .unwrap_or_else(|| panic!("no token in {}", out.stdout));
    let entry: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with('#')).collect();
    let entry = entry.join("\n").replace(
        "groups = []",
        &format!(
            "groups = {groups}\nlogins = {logins}\nslack = \"{}\"",
            slack_id(name)
        ),
    );
    assert!(!entry.contains(&token), "the file's entry holds the token");
    (entry, token)
}

impl People {
    /// `name`, in `groups` (a TOML list), added to the file.
    pub fn add(&mut self, name: &'static str, groups: &str) {
        let (entry, token) = entry(name, groups, "[]");
        let mut text = std::fs::read_to_string(&self.file).unwrap();
        text.push_str(&entry);
        text.push_str("\n\n");
        std::fs::write(&self.file, text).unwrap();
        self.tokens.insert(name, token);
    }

    /// `runbook approve RUN STEP --as WHO` with `token` (theirs when
    /// `None`) and `extra`; no token appears in what it prints.
    pub fn decide(
        &self,
        run: &str,
        step: &str,
        who: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> Run {
        let out = output(&mut self.command(run, step, who, token, extra));
        self.no_token_in(&out);
        out
    }

    pub fn command(
        &self,
        run: &str,
        step: &str,
        who: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> std::process::Command {
        let token = token
            .map(str::to_string)
            .or_else(|| self.tokens.get(who).cloned())
            .unwrap_or_else(|| "rbk_not-anyones".into());
        let mut cmd = runbook();
        cmd.args(["approve", run, step, "--as", who, "--approvers"])
            .arg(&self.file)
            .args(extra)
            .env("RUNBOOK_APPROVER_TOKEN", token);
        cmd
    }

    pub fn no_token_in(&self, out: &Run) {
        for t in self.tokens.values() {
            assert!(
                !out.stdout.contains(t.as_str()) && !out.stderr.contains(t.as_str()),
                "a token was printed:\n{}\n{}",
                out.stdout,
                out.stderr
            );
        }
    }
}
