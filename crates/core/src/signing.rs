//! Signed plugins: minisign (ed25519) signatures over a statement that
//! names the plugin, its version, its component's sha256 and its
//! manifest's sha256 together, so neither can change under an old
//! signature. A trust file says which keys may sign which plugins and how
//! many signatures a plugin needs before it runs (more for one that may
//! mutate). The crypto and the file formats are the `minisign` crate's, so
//! keys and signatures interoperate with the `minisign` tool.
//!
//! ```toml
//! [[key]]
//! name = "platform-team"
//! public-key = "RWQ…"      # the second line of a minisign `.pub` file
//! plugins = ["*"]          # names, or prefixes ending in `*`
//!
//! policies = true          # may also sign the organisation's policy directory
//!
//! [policy]
//! signatures = 1           # every plugin from a directory needs this many
//! mutating-signatures = 2  # … and this many if its manifest grants a mutation
//! policy-signatures = 1    # a policy directory (`--policies`) needs this many
//! ```
//!
//! A policy directory's signatures sit in its `signatures/` and cover the
//! sha256 of every file the policies are read from (names and contents).
//!
//! Built-in plugins are not checked: they are part of the binary, which
//! is what was installed and reviewed.

use crate::error::hinted;
use crate::grants::Pattern;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where a plugin's signatures sit, beside its manifest.
pub const DIR: &str = "signatures";
pub const EXTENSION: &str = "minisig";
/// Signatures read per plugin, and the size of each.
const MAX_SIGNATURES: usize = 16;
const MAX_SIGNATURE_BYTES: u64 = 4096;
const HINT: &str = "see the README, \"Signed plugins\", for the trust file's fields";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    #[serde(default, rename = "key")]
    keys: Vec<TrustedKeyDef>,
    /// Required: a trust file without one would ask for nothing.
    policy: Policy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeyDef {
    name: String,
    #[serde(rename = "public-key")]
    public_key: String,
    plugins: Vec<Pattern>,
    /// May sign the policy directory.
    #[serde(default)]
    policies: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// Signatures from distinct trusted keys every directory plugin needs.
    #[serde(default)]
    pub signatures: usize,
    /// … and a plugin whose manifest grants any mutation.
    #[serde(default)]
    pub mutating_signatures: usize,
    /// Signatures from distinct keys trusted to sign policy that a policy
    /// directory needs.
    #[serde(default)]
    pub policy_signatures: usize,
}

pub struct TrustedKey {
    pub name: String,
    pub id: String,
    key: minisign::PublicKey,
    pub plugins: Vec<Pattern>,
    pub policies: bool,
}

/// The loaded trust file.
pub struct Trust {
    pub path: PathBuf,
    pub keys: Vec<TrustedKey>,
    pub policy: Policy,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("path", &self.path).finish()
    }
}

impl Trust {
    pub fn load(path: &Path) -> Result<Self> {
        let file: TrustFile = crate::parse::load_toml(path, "trust file", HINT, |_| Ok(()))?;
        let invalid = |why: String| {
            hinted(
                format!("invalid trust file `{}`: {why}", path.display()),
                HINT,
            )
        };
        let mut keys = Vec::new();
        for k in file.keys {
            let key = minisign::PublicKey::from_base64(k.public_key.trim()).map_err(|e| {
                invalid(format!(
                    "key `{}`: `public-key` is not a minisign public key ({e})",
                    k.name
                ))
            })?;
            if keys.iter().any(|t: &TrustedKey| t.name == k.name) {
                return Err(invalid(format!("key name `{}` appears twice", k.name)));
            }
            let id = key_id(key.keynum());
            // One holder must not count as two signers.
            if let Some(t) = keys
                .iter()
                .find(|t: &&TrustedKey| t.id == id || t.key.to_base64() == key.to_base64())
            {
                return Err(invalid(format!(
                    "keys `{}` and `{}` are the same key (or share the id `{id}`)",
                    t.name, k.name
                )));
            }
            keys.push(TrustedKey {
                id,
                name: k.name,
                key,
                plugins: k.plugins,
                policies: k.policies,
            });
        }
        let policy = file.policy;
        if policy.mutating_signatures.max(policy.signatures) > keys.len() {
            return Err(invalid(format!(
                "the policy asks for {} signatures but only {} key{} trusted, so some plugins could never run",
                policy.mutating_signatures.max(policy.signatures),
                keys.len(),
                if keys.len() == 1 { " is" } else { "s are" }
            )));
        }
        let policy_keys = keys.iter().filter(|k| k.policies).count();
        if policy.policy_signatures > policy_keys {
            return Err(invalid(format!(
                "the policy asks for {} signatures of a policy directory but {policy_keys} key{} may sign policy (`policies = true`), so no policy directory could be used",
                policy.policy_signatures,
                if policy_keys == 1 { "" } else { "s" },
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            keys,
            policy,
        })
    }

    /// Checks a policy directory's signatures (over `digest`, the sha256
    /// of the files its policies were read from) against
    /// `policy-signatures`: every signature by a trusted key must match,
    /// and enough keys trusted to sign policy must have. Returns who signed.
    pub fn verify_policies(&self, dir: &Path, digest: &str) -> Result<Vec<String>> {
        let needed = self.policy.policy_signatures;
        let statement = policy_statement(digest);
        let mut signers: Vec<String> = Vec::new();
        let mut not_allowed: Vec<String> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for file in signature_files(dir)? {
            let text = crate::files::read_text_capped(&file, "signature", MAX_SIGNATURE_BYTES)?;
            let sig = minisign::SignatureBox::from_string(&text).map_err(|e| {
                hinted(
                    format!(
                        "signature `{}` of policy directory `{}` is not a minisign signature: {e}",
                        file.display(),
                        dir.display()
                    ),
                    "remove it, or sign again with `runbook sign --policies DIR --key KEY`",
                )
            })?;
            let id = key_id(sig.keynum());
            let Some(key) = self.keys.iter().find(|k| k.id == id) else {
                unknown.push(id);
                continue;
            };
            minisign::verify(&key.key, &sig, std::io::Cursor::new(statement.as_bytes()), true, false, false)
                .map_err(|_| {
                    hinted(
                        format!(
                            "signature `{}` by trusted key `{}` ({id}) does not match policy directory `{}`: a policy or calendar file changed after it was signed",
                            file.display(),
                            key.name,
                            dir.display()
                        ),
                        "have the change reviewed and the directory signed again (`runbook sign --policies DIR --key KEY`)",
                    )
                })?;
            if !key.policies {
                not_allowed.push(key.name.clone());
                continue;
            }
            if !signers.contains(&key.name) {
                signers.push(key.name.clone());
            }
        }
        if signers.len() < needed {
            let mut also = Vec::new();
            if !not_allowed.is_empty() {
                also.push(format!(
                    "also signed by {}, which may not sign policy",
                    not_allowed.join(", ")
                ));
            }
            if !unknown.is_empty() {
                also.push(format!(
                    "also signed by key{} {} the trust file does not know",
                    if unknown.len() == 1 { "" } else { "s" },
                    unknown.join(", ")
                ));
            }
            return Err(hinted(
                format!(
                    "policy directory `{}` has {} valid signature{} from keys trusted to sign policy{}; the trust file `{}` asks for {needed}",
                    dir.display(),
                    signers.len(),
                    if signers.len() == 1 { "" } else { "s" },
                    if also.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", also.join("; "))
                    },
                    self.path.display()
                ),
                format!(
                    "have the policies reviewed and signed by a key with `policies = true`: `runbook sign --policies {} --key KEY`",
                    dir.display()
                ),
            ));
        }
        Ok(signers)
    }

    /// The trust file to use: `flag`, else `trust.toml` in `dir` (the
    /// runbooks' directory) if there is one.
    pub fn find(flag: Option<&Path>, dir: Option<&Path>) -> Result<Option<Self>> {
        if let Some(f) = flag {
            return Self::load(f).map(Some);
        }
        let Some(dir) = dir else { return Ok(None) };
        let beside = dir.join("trust.toml");
        if beside.is_file() {
            return Self::load(&beside).map(Some);
        }
        Ok(None)
    }

    /// Checks a directory plugin's signatures: every signature by a
    /// trusted key must match (else the plugin changed after it was
    /// signed), and enough keys allowed to sign it must have. Returns who
    /// signed.
    pub fn verify(&self, subject: &Subject<'_>) -> Result<Vec<String>> {
        let needed = if subject.mutates {
            self.policy.mutating_signatures.max(self.policy.signatures)
        } else {
            self.policy.signatures
        };
        let name = subject.name;
        let statement = subject.statement();
        let mut signers: Vec<String> = Vec::new();
        let mut not_allowed: Vec<String> = Vec::new();
        for file in signature_files(subject.dir)? {
            let text = crate::files::read_text_capped(&file, "signature", MAX_SIGNATURE_BYTES)?;
            let sig = minisign::SignatureBox::from_string(&text).map_err(|e| {
                hinted(
                    format!(
                        "signature `{}` of plugin `{name}` is not a minisign signature: {e}",
                        file.display()
                    ),
                    "remove it, or sign again with `runbook sign`",
                )
            })?;
            let id = key_id(sig.keynum());
            let Some(key) = self.keys.iter().find(|k| k.id == id) else {
                continue;
            };
            minisign::verify(&key.key, &sig, std::io::Cursor::new(statement.as_bytes()), true, false, false)
                .map_err(|_| {
                    hinted(
                        format!(
                            "signature `{}` by trusted key `{}` ({id}) does not match plugin `{name}`: its component or manifest changed after it was signed",
                            file.display(),
                            key.name
                        ),
                        "rebuild and review what was signed, or have the new component and manifest reviewed and signed again (`runbook sign`)",
                    )
                })?;
            if !key.plugins.iter().any(|p| p.matches(name)) {
                not_allowed.push(key.name.clone());
                continue;
            }
            if !signers.contains(&key.name) {
                signers.push(key.name.clone());
            }
        }
        if signers.len() < needed {
            let why = if subject.mutates {
                "it may mutate, and the policy asks for"
            } else {
                "the policy asks for"
            };
            return Err(hinted(
                format!(
                    "plugin `{name}` (`{}`) has {} valid signature{} from keys trusted to sign it{}; {why} {needed} (trust file `{}`)",
                    subject.manifest.display(),
                    signers.len(),
                    if signers.len() == 1 { "" } else { "s" },
                    if not_allowed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (also signed by {}, which may not sign it)",
                            not_allowed.join(", ")
                        )
                    },
                    self.path.display()
                ),
                format!(
                    "have the plugin reviewed and signed: `runbook sign {} --key KEY`",
                    subject.dir.display()
                ),
            ));
        }
        Ok(signers)
    }
}

/// What a signature covers.
pub struct Subject<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub component_sha256: &'a str,
    pub manifest_sha256: &'a str,
    pub mutates: bool,
    /// The plugin's directory (signatures are in `signatures/` there).
    pub dir: &'a Path,
    pub manifest: &'a Path,
}

impl<'a> Subject<'a> {
    /// What a signature of the plugin `manifest` describes covers, for
    /// a component whose sha256 is `component_sha256`.
    pub fn of(manifest: &'a crate::manifest::LoadedManifest, component_sha256: &'a str) -> Self {
        Subject {
            name: manifest.manifest.name.as_str(),
            version: &manifest.manifest.version,
            component_sha256,
            manifest_sha256: &manifest.text_sha256,
            mutates: manifest.mutates(),
            dir: manifest.dir(),
            manifest: &manifest.path,
        }
    }

    /// The signed bytes: one line per field, so nothing can be moved
    /// between fields.
    pub fn statement(&self) -> String {
        format!(
            "runbook plugin signature v1\nplugin {}\nversion {}\ncomponent-sha256 {}\nmanifest-sha256 {}\n",
            self.name, self.version, self.component_sha256, self.manifest_sha256
        )
    }
}

/// What a policy directory's signature covers: the sha256 of the files
/// its policies are read from.
pub fn policy_statement(digest: &str) -> String {
    format!("runbook policy signature v1\npolicies-sha256 {digest}\n")
}

/// A key id as minisign prints it.
pub fn key_id(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    let n = keynum.len().min(8);
    b[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// The `.minisig` files in `dir/signatures/`, sorted; none if there is
/// no such directory.
pub fn signature_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let sigs = dir.join(DIR);
    if !sigs.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs_err::read_dir(&sigs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == EXTENSION))
        .collect();
    files.sort();
    if files.len() > MAX_SIGNATURES {
        return Err(hinted(
            format!(
                "`{}` holds {} signatures; at most {MAX_SIGNATURES} are read",
                sigs.display(),
                files.len()
            ),
            "remove the signatures of keys nobody trusts",
        ));
    }
    Ok(files)
}

/// A new unencrypted key pair: (public key file text, secret key file
/// text, key id).
pub fn generate() -> Result<(String, String, String)> {
    let minisign::KeyPair { pk, sk } =
        minisign::KeyPair::generate_unencrypted_keypair().context("generating a key pair")?;
    let public = pk.to_box().context("writing the public key")?.into_string();
    let secret = sk
        .to_box(Some("runbook plugin signing key"))
        .context("writing the secret key")?
        .into_string();
    Ok((public, secret, key_id(pk.keynum())))
}

/// Signs `subject` with the unencrypted minisign secret key in
/// `key_file`; returns the signature file's text and the key id.
pub fn sign(subject: &Subject<'_>, key_file: &Path) -> Result<(String, String)> {
    let trusted = format!(
        "runbook plugin {} {} component-sha256 {}",
        subject.name, subject.version, subject.component_sha256
    );
    sign_statement(
        &subject.statement(),
        (&trusted, "runbook plugin signature"),
        key_file,
    )
}

/// Signs a policy directory whose files' sha256 is `digest`.
pub fn sign_policies(digest: &str, key_file: &Path) -> Result<(String, String)> {
    sign_statement(
        &policy_statement(digest),
        (
            &format!("runbook policies-sha256 {digest}"),
            "runbook policy signature",
        ),
        key_file,
    )
}

fn sign_statement(
    statement: &str,
    (trusted, untrusted): (&str, &str),
    key_file: &Path,
) -> Result<(String, String)> {
    let text = crate::files::read_text_capped(key_file, "secret key", MAX_SIGNATURE_BYTES)?;
    let sk = minisign::SecretKeyBox::from_string(&text)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| {
            hinted(
                format!(
                    "`{}` is not an unencrypted minisign secret key: {e}",
                    key_file.display()
                ),
                "create one with `runbook keygen NAME` (or `minisign -G -W`)",
            )
        })?;
    let sig = minisign::sign(
        None,
        &sk,
        std::io::Cursor::new(statement.as_bytes().to_vec()),
        Some(trusted),
        Some(untrusted),
    )
    .context("signing")?;
    let id = key_id(sig.keynum());
    Ok((sig.into_string(), id))
}
