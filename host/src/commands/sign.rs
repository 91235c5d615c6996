//! `runbook keygen` and `runbook sign`.

use super::{emit, say};
use crate::cli::{KeygenArgs, SignArgs};
use anyhow::{Context, Result};
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_core::manifest::{self, LoadedManifest};
use runbook_core::signing;
use runbook_engine::plugin::Plugin;
use runbook_engine::runtime::{Runtime, default_cache_dir};

pub fn keygen(args: KeygenArgs) -> Result<Exit> {
    let secret_path = args.name.with_extension("key");
    let public_path = args.name.with_extension("pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(hinted(
                format!("`{}` exists already", p.display()),
                "choose another name; a key is never overwritten",
            ));
        }
    }
    let (public, secret, id) = signing::generate()?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)
            .with_context(|| format!("writing `{}`", secret_path.display()))?;
        f.write_all(secret.as_bytes())
            .with_context(|| format!("writing `{}`", secret_path.display()))?;
    }
    fs_err::write(&public_path, &public)?;
    let line = public.lines().nth(1).unwrap_or_default();
    let mut out = String::new();
    say!(
        out,
        "key `{id}`: secret key `{}` (keep it private), public key `{}`",
        secret_path.display(),
        public_path.display()
    );
    say!(out, "to trust it, add to the trust file:\n");
    say!(out, "[[key]]");
    say!(
        out,
        "name = \"{}\"",
        args.name
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    say!(out, "public-key = \"{line}\"");
    say!(out, "plugins = [\"*\"]");
    say!(
        out,
        "# policies = true    # may also sign the policy directory (`runbook sign --policies DIR`)"
    );
    say!(
        out,
        "\n# once per trust file (required): how many signatures are needed"
    );
    say!(out, "# [policy]\n# signatures = 1\n# policy-signatures = 1");
    emit(&out)?;
    Ok(Exit::Ok)
}

pub fn sign(args: SignArgs) -> Result<Exit> {
    if let Some(dir) = &args.policies {
        return sign_policies(dir, &args.key);
    }
    let Some(plugin) = &args.plugin else {
        return Err(hinted(
            "nothing to sign: give a plugin directory or `--policies DIR`",
            "`runbook sign PLUGIN_DIR --key KEY`",
        ));
    };
    let path = if plugin.is_dir() {
        plugin.join(manifest::FILE_NAME)
    } else {
        plugin.clone()
    };
    let loaded = LoadedManifest::load(&path)?;
    let runtime = Runtime::new(default_cache_dir())?;
    let plugin = Plugin::load(
        &runtime,
        loaded,
        &runbook_engine::sources::component_dirs(&args.components),
        None,
    )?;
    let subject = plugin.signed_subject();
    let (text, id) = signing::sign(&subject, &args.key)?;
    let dir = subject.dir.join(signing::DIR);
    fs_err::create_dir_all(&dir)?;
    let file = dir.join(format!("{id}.{}", signing::EXTENSION));
    fs_err::write(&file, text)?;
    let mut out = String::new();
    say!(
        out,
        "signed plugin `{}` {} (component sha256 {}, manifest sha256 {}) with key `{id}`: `{}`",
        subject.name,
        subject.version,
        subject.component_sha256,
        subject.manifest_sha256,
        file.display()
    );
    emit(&out)?;
    Ok(Exit::Ok)
}

/// Signs a policy directory: the policies are loaded and validated first
/// (what is signed is what a run would use), then their files' sha256.
fn sign_policies(dir: &std::path::Path, key: &std::path::Path) -> Result<Exit> {
    let policies = runbook_policy::Policies::load(dir)?;
    let (text, id) = signing::sign_policies(&policies.digest, key)?;
    let sigs = dir.join(signing::DIR);
    fs_err::create_dir_all(&sigs)?;
    let file = sigs.join(format!("{id}.{}", signing::EXTENSION));
    fs_err::write(&file, text)?;
    let mut out = String::new();
    say!(
        out,
        "signed policy directory `{}` ({} policies, sha256 {}) with key `{id}`: `{}`",
        dir.display(),
        policies.sources.len(),
        policies.digest,
        file.display()
    );
    emit(&out)?;
    Ok(Exit::Ok)
}
