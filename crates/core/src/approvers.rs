//! The approvers file: who may decide on a parked change, the groups they
//! are in, and how each is known. A person proves who they are with a
//! token of their own; the file keeps only its Argon2id hash, so the
//! file can be reviewed and shared without giving anyone a way in.
//!
//! ```toml
//! [people.alice]
//! token = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `runbook approver-token alice`
//! groups = ["sre", "incident-commander"]
//! logins = ["asmith"]     # other names the run's starter may be known by
//! slack = "U0123ABCD"     # their Slack user id, for Slack's buttons
//! ```

use crate::error::hinted;
use crate::ids::Name;
use anyhow::Result;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    people: BTreeMap<String, PersonEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonEntry {
    token: String,
    #[serde(default)]
    groups: Vec<Name>,
    #[serde(default)]
    logins: Vec<String>,
    /// Their Slack user id (`U0123ABCD`): a click on a Slack approval
    /// message by that user is theirs.
    #[serde(default)]
    slack: Option<String>,
}

/// Someone who may approve, as the file has them.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub groups: Vec<String>,
    pub logins: Vec<String>,
    pub slack: Option<String>,
    token: String,
}

/// An approvers file, read and checked.
#[derive(Debug)]
pub struct Approvers {
    pub path: PathBuf,
    people: BTreeMap<String, Person>,
}

const HINT: &str = "see runbooks/README.md (Approvals): `[people.NAME]` with `token` (from `runbook approver-token NAME`), `groups`, `logins` and `slack`";

impl Approvers {
    pub fn load(path: &Path) -> Result<Self> {
        let file: File =
            crate::parse::load_toml_redacted(path, "approvers file", HINT, |f: &mut File| {
                check(f)
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            people: file
                .people
                .into_iter()
                .map(|(name, p)| {
                    let person = Person {
                        name: name.clone(),
                        groups: p.groups.iter().map(|g| g.to_string()).collect(),
                        logins: p.logins,
                        slack: p.slack,
                        token: p.token,
                    };
                    (name, person)
                })
                .collect(),
        })
    }

    /// `name`, if their `token` is theirs. Every failure reads the same
    /// to the caller apart from naming the person.
    pub fn authenticate(&self, name: &str, token: &str) -> Result<&Person> {
        let refused = || {
            hinted(
                format!(
                    "`{name}` could not be authenticated with the token given (approvers file `{}`)",
                    self.path.display()
                ),
                "give your own token in `RUNBOOK_APPROVER_TOKEN` (or `--token-file`); a new one comes from `runbook approver-token NAME` and its hash goes in the approvers file",
            )
        };
        // A name nobody has costs the same Argon2 check as a wrong token:
        // how long a refusal takes does not tell names apart.
        static NOBODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let nobody = NOBODY.get_or_init(|| new_token().map(|(_, h)| h).unwrap_or_default());
        let person = self.people.get(name);
        let stored = person.map_or(nobody.as_str(), |p| p.token.as_str());
        let hash = PasswordHash::new(stored).map_err(|_| refused())?;
        let checked = argon2::Argon2::default().verify_password(token.trim().as_bytes(), &hash);
        match (person, checked) {
            (Some(person), Ok(())) => Ok(person),
            _ => Err(refused()),
        }
    }

    pub fn people(&self) -> impl Iterator<Item = &Person> {
        self.people.values()
    }

    /// The person whose Slack user id this is.
    pub fn by_slack(&self, user: &str) -> Option<&Person> {
        self.people
            .values()
            .find(|p| p.slack.as_deref() == Some(user))
    }

    /// The person of that name (for a session opened earlier, or a name
    /// a trusted proxy gives).
    pub fn get(&self, name: &str) -> Option<&Person> {
        self.people.get(name)
    }

    /// Whether `rule` can be met by the people of this file: every name
    /// it gives is a person or a group here, and enough different people
    /// may approve. `Ok(Some(warning))` when it can be met only if none
    /// of them starts the run.
    pub fn can_meet(&self, rule: &crate::approval::Rule) -> Result<Option<String>, String> {
        for f in &rule.from {
            let known = self.people.contains_key(f.as_str())
                || self
                    .people
                    .values()
                    .any(|p| p.groups.iter().any(|g| g == f.as_str()));
            if !known {
                return Err(format!(
                    "`{f}` in `from` is neither a person nor a group of approvers file `{}`",
                    self.path.display()
                ));
            }
        }
        let able: Vec<&str> = self
            .people
            .values()
            .filter(|p| rule.may_decide(&p.name, &p.groups, &p.logins, None).is_ok())
            .map(|p| p.name.as_str())
            .collect();
        let who = if able.is_empty() {
            "nobody".to_string()
        } else {
            able.join(", ")
        };
        let need = rule.approvals as usize;
        if able.len() < need {
            return Err(format!(
                "it needs {need} approvals and approvers file `{}` has {} who may give them ({who}): a run could wait forever",
                self.path.display(),
                able.len(),
            ));
        }
        // One of them may start the run, and may then not approve it.
        if !rule.starter_may_approve && able.len() == need {
            return Ok(Some(format!(
                "it needs {need} approvals and exactly {need} people may give them ({who}): a run one of them starts can only escalate"
            )));
        }
        Ok(None)
    }
}

fn check(f: &mut File) -> Result<(), String> {
    if f.people.len() > 10_000 {
        return Err("more than 10000 people; split the file".into());
    }
    for (name, p) in &f.people {
        Name::parse(name).map_err(|why| format!("person `{name}`: {why}"))?;
        if name == crate::approval::TIMEOUT {
            return Err(format!(
                "person `{name}`: the name is kept for decisions a timeout makes"
            ));
        }
        // Parsed, never echoed: a pasted token would otherwise be shown.
        let hash = PasswordHash::new(&p.token).map_err(|_| {
            format!(
                "person `{name}`: `token` is not an Argon2id hash (`$argon2id$...`); put the line `runbook approver-token {name}` prints, never the token itself"
            )
        })?;
        if hash.algorithm.as_str() != "argon2id" {
            return Err(format!(
                "person `{name}`: `token` is hashed with `{}`; use Argon2id (`runbook approver-token {name}`)",
                hash.algorithm
            ));
        }
        if let Some(id) = &p.slack
            && (id.len() < 2
                || id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        {
            return Err(format!(
                "person `{name}`: `slack` `{id}` is not a Slack user id (like `U0123ABCD`)"
            ));
        }
        if let Some(twice) = f
            .people
            .iter()
            .filter(|(other, q)| *other != name && q.slack.is_some() && q.slack == p.slack)
            .map(|(other, _)| other)
            .next()
        {
            return Err(format!(
                "person `{name}`: `slack` is also `{twice}`'s; a Slack user is one person"
            ));
        }
        if let Some(l) = p
            .logins
            .iter()
            .find(|l| l.is_empty() || l.len() > 64 || l.chars().any(char::is_whitespace))
        {
            return Err(format!(
                "person `{name}`: login `{l}` must be 1-64 characters without spaces"
            ));
        }
    }
    Ok(())
}

/// A new token for a person and the Argon2id hash that goes in the
/// approvers file. The token is shown once, to be given to them.
pub fn new_token() -> Result<(String, String)> {
    let token = format!("rbk_{}", random_hex(24));
    let salt = SaltString::generate(&mut password_hash::rand_core::OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the token failed: {e}"))?
        .to_string();
    Ok((token, hash))
}

/// `n` bytes from the OS's random source, as hex (tokens, session ids).
pub fn random_hex(n: usize) -> String {
    use password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvers.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_person_is_known_by_their_token_only() {
        let (token, hash) = new_token().unwrap();
        let (_d, path) = file(&format!(
            "[people.alice]\ntoken = \"{hash}\"\ngroups = [\"sre\"]\n"
        ));
        let approvers = Approvers::load(&path).unwrap();
        let alice = approvers.authenticate("alice", &token).unwrap();
        assert_eq!(alice.groups, ["sre"]);
        let wrong = approvers.authenticate("alice", "rbk_0000").unwrap_err();
        assert!(
            wrong
                .to_string()
                .contains("`alice` could not be authenticated")
        );
        assert!(approvers.authenticate("bob", &token).is_err());
    }

    #[test]
    fn a_pasted_token_is_refused_without_being_echoed() {
        let (_d, path) = file("[people.alice]\ntoken = \"rbk_secret123\"\n");
        let err = format!("{:#}", Approvers::load(&path).unwrap_err());
        assert!(err.contains("is not an Argon2id hash"), "{err}");
        assert!(!err.contains("secret123"), "{err}");
    }
}
