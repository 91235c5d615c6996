//! What a security reviewer relies on, through the real binary: the lock
//! (`runbook lock`, `--locked`), the capability diff (`runbook review`,
//! also against a git revision, as the CI recipe runs it), signed plugins
//! with a trust file, and plugins pushed to and pulled from a real OCI
//! registry (Debian's `docker-registry`) on 127.0.0.1.

mod common;

use common::{RB0031, Run, root, run, runbook};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNBOOK: &str = "RB-0031-auth-service-degradation.md";

/// A runbooks directory of its own: RB-0031, its scenarios, and copies of
/// its plugins (components beside their manifests) in `plugins/` beside
/// it, where runs find them by default.
struct Tree {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("runbooks");
        std::fs::create_dir_all(dir.join("scenarios")).unwrap();
        std::fs::copy(root().join(RB0031), dir.join(RUNBOOK)).unwrap();
        for s in ["healthy.toml", "session-store-outage.toml"] {
            std::fs::copy(
                root().join("runbooks/scenarios").join(s),
                dir.join("scenarios").join(s),
            )
            .unwrap();
        }
        let built = common::built_plugins();
        for entry in std::fs::read_dir(root().join("plugins/steps")).unwrap() {
            let src = entry.unwrap().path();
            let name = src.file_name().unwrap().to_string_lossy().into_owned();
            let dst = dir.join("plugins").join(&name);
            std::fs::create_dir_all(&dst).unwrap();
            let wasm = format!("{}.wasm", name.replace('-', "_"));
            std::fs::copy(built.join(&wasm), dst.join(&wasm)).unwrap();
            std::fs::copy(src.join("plugin.toml"), dst.join("plugin.toml")).unwrap();
        }
        Self { _tmp: tmp, dir }
    }

    fn runbook(&self) -> String {
        self.path(RUNBOOK)
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_str().unwrap().to_string()
    }

    /// Replaces `from` (which must be there) with `to` in file `rel`.
    fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.dir.join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} lacks {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn lock(&self) {
        let out = run(&["lock", self.dir.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.starts_with("wrote `"), "{}", out.stdout);
    }

    fn check_locked(&self) -> Run {
        run(&["check", "--locked", &self.runbook()])
    }

    fn review(&self) -> Run {
        run(&["review", self.dir.to_str().unwrap()])
    }
}

/// Locks a fresh tree, alters it with `change`, and checks that
/// `--locked` refuses it naming `expected`, and that `review` reports it
/// with exit status `code` (6 widened, 0 not).
fn altered(change: impl Fn(&Tree), expected: &str, code: i32) -> Run {
    let t = Tree::new();
    t.lock();
    let out = t.check_locked();
    assert_eq!(out.code, 0, "a fresh lock must pass: {}", out.stderr);
    change(&t);
    let out = t.check_locked();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("`--locked`: runbook"), "{}", out.stderr);
    assert!(out.stderr.contains(expected), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: if the change is intended"),
        "{}",
        out.stderr
    );
    let review = t.review();
    assert_eq!(review.code, code, "{}{}", review.stdout, review.stderr);
    assert!(review.stdout.contains(expected), "{}", review.stdout);
    let json = run(&["review", "--json", t.dir.to_str().unwrap()]);
    assert_eq!(json.code, code);
    let doc = json.json();
    assert!(
        doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["what"].as_str().unwrap().contains(expected)),
        "{doc}"
    );
    // Run refuses it too, before any step runs.
    let out = run(&[
        "run",
        "--locked",
        &t.runbook(),
        "--sim",
        &t.path("scenarios/healthy.toml"),
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    review
}

#[test]
fn the_committed_lock_covers_rb0031_and_its_builtin_plugins() {
    let out = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
        "--locked",
        "--yes",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&["review"]);
    assert_eq!(
        out.code, 0,
        "runbooks/runbook.lock is stale:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("No change"), "{}", out.stdout);
}

#[test]
fn a_runbook_without_a_lock_is_refused_under_locked() {
    let t = Tree::new();
    let out = t.check_locked();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("`--locked`: there is no `") && out.stderr.contains("runbook.lock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: review the runbook and its plugins, then run `runbook lock"),
        "{}",
        out.stderr
    );
    // Without a lock, everything is new, and new is wider.
    let out = t.review();
    assert_eq!(out.code, 6, "{}", out.stdout);
    assert!(out.stdout.contains("new step"), "{}", out.stdout);
    t.lock();
    let out = run(&[
        "run",
        "--locked",
        &t.runbook(),
        "--sim",
        &t.path("scenarios/healthy.toml"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn changed_component_bytes_are_a_change_but_not_a_widening() {
    let review = altered(
        |t| {
            // A custom section appended: still a valid component, other bytes.
            let wasm = t.dir.join("plugins/set-flag/set_flag.wasm");
            let mut bytes = std::fs::read(&wasm).unwrap();
            bytes.extend_from_slice(&[0x00, 0x03, 0x01, b'x', b'y']);
            std::fs::write(&wasm, bytes).unwrap();
        },
        "component changed: sha256 `",
        0,
    );
    assert!(
        review
            .stdout
            .contains("- **plugin `set-flag`**: component changed: sha256 `")
            && review.stdout.contains(", grants unchanged"),
        "{}",
        review.stdout
    );
}

#[test]
fn a_wider_flag_grant_is_reported_first() {
    let review = altered(
        |t| {
            t.edit(
                RUNBOOK,
                "mutate: [AUTH_STATELESS_FALLBACK]",
                "mutate: [\"AUTH_*\"]",
            )
        },
        "`feature-flags` mutate `AUTH_*` (a wildcard) added (was `AUTH_STATELESS_FALLBACK`)",
        6,
    );
    let first = review.stdout.lines().find(|l| l.starts_with("- ")).unwrap();
    assert!(
        first.contains("step `enable-fallback`"),
        "{}",
        review.stdout
    );
    let widened = review.stdout.find("## Widened").unwrap();
    assert!(review.stdout[widened..].contains("AUTH_*"));
}

#[test]
fn read_becoming_mutate_is_a_widening_of_step_and_manifest() {
    let review = altered(
        |t| {
            t.edit(
                "plugins/deploy-correlation/plugin.toml",
                "ecs = { read = [\"*\"] }",
                "ecs = { read = [\"*\"], mutate = [\"*\"] }",
            );
            t.edit(
                RUNBOOK,
                "ecs: { read: [production/auth-service] }\n    on:\n      correlated",
                "ecs: { mutate: [production/auth-service] }\n    on:\n      correlated",
            );
        },
        "`ecs` read → mutate `production/auth-service`",
        6,
    );
    assert!(
        review.stdout.contains(
            "**plugin `deploy-correlation`**: manifest `ecs` read → mutate `*` (a wildcard)"
        ),
        "{}",
        review.stdout
    );
}

#[test]
fn a_raised_limit_is_a_widening() {
    altered(
        |t| {
            t.edit(
                "plugins/set-flag/plugin.toml",
                "memory_mib = 16",
                "memory_mib = 64",
            )
        },
        "limit `memory_mib` raised 16 → 64 MiB",
        6,
    );
}

#[test]
fn an_input_naming_another_flag_is_a_widening_within_the_same_grant() {
    // The step's grant is `AUTH_*` when locked; only its input changes.
    let t = Tree::new();
    t.edit(
        RUNBOOK,
        "read: [AUTH_STATELESS_FALLBACK]\n        mutate: [AUTH_STATELESS_FALLBACK]",
        "read: [\"AUTH_*\"]\n        mutate: [\"AUTH_*\"]",
    );
    t.lock();
    assert_eq!(t.check_locked().code, 0);
    t.edit(
        RUNBOOK,
        "key: AUTH_STATELESS_FALLBACK",
        "key: AUTH_SESSION_BYPASS",
    );
    let out = t.check_locked();
    assert_eq!(out.code, 2);
    let expected = "its inputs now name feature-flags `AUTH_SESSION_BYPASS` for mutate";
    assert!(out.stderr.contains(expected), "{}", out.stderr);
    let review = t.review();
    assert_eq!(review.code, 6);
    assert!(review.stdout.contains(expected), "{}", review.stdout);
    assert!(
        review
            .stdout
            .contains("its inputs no longer name feature-flags `AUTH_STATELESS_FALLBACK`"),
        "{}",
        review.stdout
    );
}

#[test]
fn a_narrowing_passes_review_but_not_locked() {
    let review = altered(
        |t| t.edit(RUNBOOK, "max_mutations: 3", "max_mutations: 2"),
        "`max_mutations` 3 → 2",
        0,
    );
    assert!(review.stdout.contains("## Narrowed"), "{}", review.stdout);
    assert!(!review.stdout.contains("## Widened"), "{}", review.stdout);
}

#[test]
fn a_hand_edited_lock_is_refused_with_its_name() {
    let t = Tree::new();
    t.lock();
    let lock = t.dir.join("runbook.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(
        &lock,
        text.replace("version = 1", "version = 1\nsurprise = true"),
    )
    .unwrap();
    let out = t.check_locked();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("invalid lock file `"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field `surprise`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: `runbook lock` writes this file"),
        "{}",
        out.stderr
    );
}

// --- review in CI -----------------------------------------------------------

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"])
        .args(args)
        .output()
        .expect("git (scripts/test installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `bash`, with the environment the tests give `runbook`.
fn bash() -> Command {
    let mut cmd = Command::new("bash");
    for (k, v) in runbook().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

/// The recipe in `docs/ci/review.yml`, run as written: each of its
/// `runbook` lines in `bash -eo pipefail` (what `shell: bash` means), in a
/// clone whose `origin/main` has the reviewed lock.
#[test]
fn the_ci_recipe_fails_on_a_widening_and_passes_otherwise() {
    let recipe = std::fs::read_to_string(root().join("docs/ci/review.yml")).unwrap();
    let lines: Vec<String> = recipe
        .lines()
        .filter_map(|l| l.trim().strip_prefix("run: "))
        .filter(|l| l.starts_with("runbook "))
        .map(String::from)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("runbook review ") && l.contains("--base")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("runbook lock --check")),
        "{lines:?}"
    );
    // Each of those steps says `shell: bash`, so the pipe keeps the status.
    for l in &lines {
        let at = recipe.find(l.as_str()).unwrap();
        let step = &recipe[recipe[..at].rfind("- name:").unwrap()..at];
        assert!(step.contains("shell: bash"), "no `shell: bash` for `{l}`");
    }

    let t = Tree::new();
    let origin = t.dir.parent().unwrap();
    git(origin, &["init", "-q", "-b", "main"]);
    t.lock();
    git(origin, &["add", "-A"]);
    git(origin, &["commit", "-q", "-m", "reviewed"]);
    let clone = tempfile::tempdir().unwrap();
    let repo = clone.path().join("repo");
    git(
        clone.path(),
        &["clone", "-q", origin.to_str().unwrap(), "repo"],
    );
    let rb = repo.join("runbooks").join(RUNBOOK);
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&rb).unwrap();
        assert!(text.contains(from));
        std::fs::write(&rb, text.replacen(from, to, 1)).unwrap();
    };
    let summary = clone.path().join("summary.md");
    let bin = Path::new(env!("CARGO_BIN_EXE_runbook"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The recipe's `runbook` lines in order; the first failing one decides.
    let ci = || -> (i32, String) {
        let _ = std::fs::remove_file(&summary);
        let mut all = String::new();
        for l in &lines {
            let out = common::output(
                bash()
                    .current_dir(&repo)
                    .env("PATH", &path)
                    .env("GITHUB_STEP_SUMMARY", &summary)
                    .args(["-eo", "pipefail", "-c", l]),
            );
            all.push_str(&out.stdout);
            all.push_str(&out.stderr);
            if out.code != 0 {
                return (out.code, all);
            }
        }
        (0, all)
    };
    git(&repo, &["checkout", "-q", "-b", "change"]);
    let (code, out) = ci();
    assert_eq!(code, 0, "{out}");
    // A pull request that widens a grant and updates the lock: the lock
    // check passes, the review fails and says why, in the summary too.
    edit("mutate: [AUTH_STATELESS_FALLBACK]", "mutate: [\"AUTH_*\"]");
    let out = common::output(runbook().current_dir(&repo).args(["lock", "runbooks"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    git(&repo, &["commit", "-q", "-am", "wider"]);
    let (code, out) = ci();
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("origin/main:./runbook.lock"), "{out}");
    let written = std::fs::read_to_string(&summary).unwrap();
    assert!(
        written.contains("## Widened: needs a security review"),
        "{written}"
    );
    assert!(
        written.contains("`feature-flags` mutate `AUTH_*`"),
        "{written}"
    );
    // One that changes a grant but not the lock: the lock check fails.
    git(&repo, &["checkout", "-q", "main"]);
    git(&repo, &["checkout", "-q", "-b", "unlocked"]);
    edit("mutate: [AUTH_STATELESS_FALLBACK]", "mutate: [\"AUTH_*\"]");
    let (code, out) = ci();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is out of date"), "{out}");
    assert!(out.contains("`feature-flags` mutate `AUTH_*`"), "{out}");
    // One that only narrows (and is locked) passes.
    git(&repo, &["checkout", "-q", "-f", "main"]);
    git(&repo, &["checkout", "-q", "-b", "narrower"]);
    edit("max_mutations: 3", "max_mutations: 1");
    let out = common::output(runbook().current_dir(&repo).args(["lock", "runbooks"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (code, out) = ci();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("`max_mutations` 3 → 1"), "{out}");
    // A base that does not exist is an error, not a pass.
    let out = common::output(runbook().current_dir(&repo).args([
        "review",
        "runbooks",
        "--base",
        "no-such-branch",
    ]));
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("no such git revision"),
        "{}",
        out.stderr
    );
}

// --- signed plugins ---------------------------------------------------------

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            let out = run(&["keygen", dir.path().join(n).to_str().unwrap()]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(out.stdout.contains("public-key = \"RW"), "{}", out.stdout);
            let secret = dir.path().join(format!("{n}.key"));
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the secret key is private");
        }
        Self { dir }
    }

    fn public(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.pub"))).unwrap();
        text.lines().nth(1).unwrap().to_string()
    }

    fn secret(&self, name: &str) -> String {
        self.dir
            .path()
            .join(format!("{name}.key"))
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// A trust file: each `(key, plugins)` trusted, and the policy.
fn trust(keys: &Keys, trusted: &[(&str, &str)], signatures: usize, mutating: usize) -> String {
    let mut t = String::new();
    for (name, plugins) in trusted {
        t.push_str(&format!(
            "[[key]]\nname = \"{name}\"\npublic-key = \"{}\"\nplugins = [{plugins}]\n\n",
            keys.public(name)
        ));
    }
    t.push_str(&format!(
        "[policy]\nsignatures = {signatures}\nmutating-signatures = {mutating}\n"
    ));
    t
}

fn sign(t: &Tree, plugin: &str, keys: &Keys, key: &str) {
    let out = run(&[
        "sign",
        &t.path(&format!("plugins/{plugin}")),
        "--key",
        &keys.secret(key),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("signed plugin `{plugin}`")),
        "{}",
        out.stdout
    );
}

const MUTATING: [&str; 3] = ["set-flag", "ecs-rollback", "escalate"];
const READING: [&str; 5] = [
    "metric-threshold",
    "redis-health",
    "downstream-impact",
    "verify-recovery",
    "deploy-correlation",
];

fn healthy(t: &Tree) -> Run {
    run(&[
        "run",
        &t.runbook(),
        "--sim",
        &t.path("scenarios/healthy.toml"),
    ])
}

#[test]
fn a_policy_needs_trusted_signatures_and_two_for_plugins_that_mutate() {
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let t = Tree::new();
    std::fs::write(
        t.dir.join("trust.toml"),
        trust(&keys, &[("alice", "\"*\""), ("bob", "\"*\"")], 1, 2),
    )
    .unwrap();
    // Unsigned: refused before anything runs.
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("has 0 valid signatures from keys trusted to sign it; the policy asks for 1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: have the plugin reviewed and signed: `runbook sign"),
        "{}",
        out.stderr
    );
    for p in READING.iter().chain(&MUTATING) {
        sign(&t, p, &keys, "alice");
    }
    // One signature is not enough for a plugin that may mutate.
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("it may mutate, and the policy asks for 2"),
        "{}",
        out.stderr
    );
    // A key nobody trusts does not count.
    for p in MUTATING {
        sign(&t, p, &keys, "carol");
    }
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("has 1 valid signature from"),
        "{}",
        out.stderr
    );
    for p in MUTATING {
        sign(&t, p, &keys, "bob");
    }
    let out = healthy(&t);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The wrong key under a key's name: bob's public key listed as alice's.
    let swapped = trust(&keys, &[("alice", "\"*\""), ("bob", "\"*\"")], 1, 2).replacen(
        &keys.public("alice"),
        &keys.public("carol"),
        1,
    );
    std::fs::write(t.dir.join("trust.toml"), swapped).unwrap();
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("has 0 valid signatures")
            || out.stderr.contains("has 1 valid signature"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_manifest_widened_under_an_old_signature_is_refused() {
    let keys = Keys::new(&["alice"]);
    let t = Tree::new();
    std::fs::write(
        t.dir.join("trust.toml"),
        trust(&keys, &[("alice", "\"*\"")], 1, 1),
    )
    .unwrap();
    for p in READING.iter().chain(&MUTATING) {
        sign(&t, p, &keys, "alice");
    }
    assert_eq!(healthy(&t).code, 0);
    t.edit(
        "plugins/deploy-correlation/plugin.toml",
        "ecs = { read = [\"*\"] }",
        "ecs = { read = [\"*\"], mutate = [\"*\"] }",
    );
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("by trusted key `alice`") && out.stderr.contains("does not match plugin `deploy-correlation`: its component or manifest changed after it was signed"),
        "{}",
        out.stderr
    );
    // A component swapped under the signature: the same.
    let t = Tree::new();
    std::fs::write(
        t.dir.join("trust.toml"),
        trust(&keys, &[("alice", "\"*\"")], 1, 1),
    )
    .unwrap();
    for p in READING.iter().chain(&MUTATING) {
        sign(&t, p, &keys, "alice");
    }
    let wasm = t.dir.join("plugins/set-flag/set_flag.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.extend_from_slice(&[0x00, 0x03, 0x01, b'x', b'y']);
    std::fs::write(&wasm, bytes).unwrap();
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("does not match plugin `set-flag`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_key_signs_only_the_plugins_it_is_trusted_for() {
    let keys = Keys::new(&["alice", "bob"]);
    let t = Tree::new();
    std::fs::write(
        t.dir.join("trust.toml"),
        trust(&keys, &[("alice", "\"*\""), ("bob", "\"metric-*\"")], 1, 2),
    )
    .unwrap();
    for p in READING.iter().chain(&MUTATING) {
        sign(&t, p, &keys, "alice");
    }
    for p in MUTATING {
        sign(&t, p, &keys, "bob");
    }
    let out = healthy(&t);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("(also signed by bob, which may not sign it)"),
        "{}",
        out.stderr
    );
}

// --- OCI registry -----------------------------------------------------------

/// Debian's `docker-registry` on a free loopback port, storing in a
/// directory of its own; stopped when dropped.
struct Registry {
    child: Child,
    storage: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start() -> Self {
        let storage = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: run the tests with scripts/test, which installs it");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            storage,
            addr,
        }
    }

    /// The file the registry keeps blob `digest` in.
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in {stdout}"))
        .trim()
}

#[test]
fn plugins_round_trip_through_a_registry_by_digest_verified() {
    let registry = Registry::start();
    let keys = Keys::new(&["alice"]);
    let t = Tree::new();
    sign(&t, "set-flag", &keys, "alice");
    let trust_file = t.dir.parent().unwrap().join("pull-trust.toml");
    std::fs::write(&trust_file, trust(&keys, &[("alice", "\"*\"")], 1, 1)).unwrap();
    let reference = format!("{}/runbook/set-flag:0.1.0", registry.addr);
    let out = run(&["plugin", "push", &t.path("plugins/set-flag"), &reference]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    eprintln!("{}", out.stdout.lines().next().unwrap());
    let digest = field(&out.stdout, "digest: ").to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // Pushing the same plugin again gives the same digest.
    let again = run(&["plugin", "push", &t.path("plugins/set-flag"), &reference]);
    assert_eq!(field(&again.stdout, "digest: "), digest);
    let by_digest = format!("{}/runbook/set-flag@{digest}", registry.addr);

    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().to_str().unwrap();
    let out = run(&[
        "plugin",
        "pull",
        &by_digest,
        "--store",
        store_path,
        "--trust",
        trust_file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    eprintln!("{}", out.stdout.lines().next().unwrap());
    assert!(
        out.stdout.contains("1 signature, verified"),
        "{}",
        out.stdout
    );
    let pulled = store.path().join("set-flag");
    for f in ["plugin.toml", "set_flag.wasm", "signatures", "origin.txt"] {
        assert!(pulled.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::read(pulled.join("set_flag.wasm")).unwrap(),
        std::fs::read(t.dir.join("plugins/set-flag/set_flag.wasm")).unwrap()
    );
    // The store is a plugin directory; the lock names where it came from.
    let lockdir = tempfile::tempdir().unwrap();
    let rb = lockdir.path().join(RUNBOOK);
    std::fs::copy(root().join(RB0031), &rb).unwrap();
    let out = run(&["lock", rb.to_str().unwrap(), "--plugins", store_path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lock = std::fs::read_to_string(lockdir.path().join("runbook.lock")).unwrap();
    assert!(
        lock.contains(&format!("(pulled from oci://{by_digest})\"")),
        "{lock}"
    );
    let out = run(&[
        "run",
        "--locked",
        rb.to_str().unwrap(),
        "--plugins",
        store_path,
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
        "--yes",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // By tag only: refused; by a digest the registry does not have: refused.
    let out = run(&["plugin", "pull", &reference, "--store", store_path]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("names no digest; plugins are pulled by digest only"),
        "{}",
        out.stderr
    );
    let wrong = format!(
        "{}/runbook/set-flag@sha256:{}",
        registry.addr,
        "0".repeat(64)
    );
    let out = run(&["plugin", "pull", &wrong, "--store", store_path]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("manifest unknown"), "{}", out.stderr);

    // A registry that serves other bytes under the digest: refused, and
    // nothing installed.
    let component = format!(
        "sha256:{}",
        runbook_core::hash::sha256_hex(&std::fs::read(pulled.join("set_flag.wasm")).unwrap())
    );
    let blob = registry.blob(&component);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = run(&[
        "plugin",
        "pull",
        &by_digest,
        "--store",
        fresh.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("Invalid digest"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing was installed"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(fresh.path())
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count(),
        0
    );
    let manifest = registry.blob(&digest);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("set-flag", "set-flah")).unwrap();
    let out = run(&[
        "plugin",
        "pull",
        &by_digest,
        "--store",
        fresh.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("Invalid digest"), "{}", out.stderr);
}

#[test]
fn a_pull_under_a_policy_refuses_an_unsigned_plugin_and_installs_nothing() {
    let registry = Registry::start();
    let keys = Keys::new(&["alice"]);
    let t = Tree::new();
    let trust_file = t.dir.parent().unwrap().join("pull-trust.toml");
    std::fs::write(&trust_file, trust(&keys, &[("alice", "\"*\"")], 1, 1)).unwrap();
    let reference = format!("{}/runbook/set-flag:unsigned", registry.addr);
    let out = run(&["plugin", "push", &t.path("plugins/set-flag"), &reference]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let digest = field(&out.stdout, "digest: ").to_string();
    let store = tempfile::tempdir().unwrap();
    let out = run(&[
        "plugin",
        "pull",
        &format!("{}/runbook/set-flag@{digest}", registry.addr),
        "--store",
        store.path().to_str().unwrap(),
        "--trust",
        trust_file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("has 0 valid signatures"),
        "{}",
        out.stderr
    );
    assert!(!store.path().join("set-flag").exists());
}

#[test]
fn a_step_running_another_plugin_is_a_widening() {
    let review = altered(
        |t| {
            // Other code under the same grant: a copy of `metric-threshold`
            // as `threshold-b` (any component would do).
            let from = t.dir.join("plugins/metric-threshold");
            let to = t.dir.join("plugins/threshold-b");
            std::fs::create_dir_all(&to).unwrap();
            for f in ["plugin.toml", "metric_threshold.wasm"] {
                std::fs::copy(from.join(f), to.join(f)).unwrap();
            }
            t.edit(
                "plugins/threshold-b/plugin.toml",
                "name = \"metric-threshold\"",
                "name = \"threshold-b\"",
            );
            let text = std::fs::read_to_string(t.dir.join(RUNBOOK)).unwrap();
            let at = text.find("- id: check-signing").unwrap();
            let (head, tail) = text.split_at(at);
            let tail = tail.replacen("plugin: metric-threshold", "plugin: threshold-b", 1);
            std::fs::write(t.dir.join(RUNBOOK), format!("{head}{tail}")).unwrap();
        },
        "now runs plugin `threshold-b`",
        6,
    );
    assert!(
        review
            .stdout
            .contains("**plugin `threshold-b`**: new plugin"),
        "{}",
        review.stdout
    );
}

#[test]
fn a_changed_input_or_route_is_refused_under_locked_and_shown() {
    let review = altered(
        |t| t.edit(RUNBOOK, "value: \"true\"", "value: \"false\""),
        "input `value` `true` → `false`",
        0,
    );
    assert!(
        review.stdout.contains("## Changed, same reach"),
        "{}",
        review.stdout
    );
    // A healthy system routed into the step that sets a flag.
    altered(
        |t| {
            t.edit(
                RUNBOOK,
                "healthy: announce-resolved",
                "healthy: enable-fallback",
            )
        },
        "outcome `healthy` now goes to `enable-fallback`, a step that may mutate",
        6,
    );
}

#[test]
fn a_weaker_trust_policy_is_a_widening() {
    let keys = Keys::new(&["alice", "bob"]);
    let t = Tree::new();
    let strict = trust(&keys, &[("alice", "\"*\""), ("bob", "\"*\"")], 1, 2);
    std::fs::write(t.dir.join("trust.toml"), &strict).unwrap();
    for p in READING.iter().chain(&MUTATING) {
        sign(&t, p, &keys, "alice");
    }
    for p in MUTATING {
        sign(&t, p, &keys, "bob");
    }
    t.lock();
    assert!(
        std::fs::read_to_string(t.dir.join("runbook.lock"))
            .unwrap()
            .contains("mutating-signatures = 2")
    );
    assert_eq!(t.check_locked().code, 0);
    std::fs::write(
        t.dir.join("trust.toml"),
        trust(&keys, &[("alice", "\"*\""), ("bob", "\"*\"")], 1, 1),
    )
    .unwrap();
    let out = t.check_locked();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("trust file: policy `mutating-signatures` 2 → 1"),
        "{}",
        out.stderr
    );
    let review = t.review();
    assert_eq!(review.code, 6, "{}", review.stdout);
    // No trust file at all: nothing is asked, which is wider still.
    std::fs::remove_file(t.dir.join("trust.toml")).unwrap();
    let out = t.check_locked();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("policy `signatures` 1 → 0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no longer trusts key `alice`"),
        "{}",
        out.stderr
    );
    // A new key is a widening too.
    let wider = trust(&keys, &[("alice", "\"*\""), ("bob", "\"*\"")], 1, 2).replacen(
        "[policy]",
        &format!(
            "[[key]]\nname = \"carol\"\npublic-key = \"{}\"\nplugins = [\"set-*\"]\n\n[policy]",
            Keys::new(&["carol"]).public("carol")
        ),
        1,
    );
    std::fs::write(t.dir.join("trust.toml"), wider).unwrap();
    let review = t.review();
    assert_eq!(review.code, 6);
    assert!(
        review.stdout.contains("trusts a new key `carol`"),
        "{}",
        review.stdout
    );
}

#[test]
fn lock_check_fails_on_a_stale_lock_and_writes_nothing() {
    let t = Tree::new();
    let out = run(&["lock", "--check", t.dir.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!t.dir.join("runbook.lock").exists());
    t.lock();
    let out = run(&["lock", "--check", t.dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("is up to date"), "{}", out.stdout);
}

#[test]
fn a_runbook_that_does_not_load_is_an_error_not_a_removal() {
    let t = Tree::new();
    t.lock();
    t.edit(
        RUNBOOK,
        "healthy: announce-resolved",
        "healthy: no-such-step",
    );
    let out = t.review();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("no-such-step"), "{}", out.stderr);
    let out = run(&["lock", t.dir.to_str().unwrap()]);
    assert_eq!(out.code, 2);
}

#[test]
fn a_lock_with_a_malformed_digest_is_refused_not_a_crash() {
    let t = Tree::new();
    t.lock();
    let lock = t.dir.join("runbook.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    let at = text.find("sha256 = \"").unwrap() + 10;
    let broken = format!("{}abcdefghijké{}", &text[..at], &text[at + 64..]);
    std::fs::write(&lock, broken).unwrap();
    let out = t.review();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("`sha256` must be 64 hex digits"),
        "{}",
        out.stderr
    );
}
