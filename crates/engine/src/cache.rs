//! The compiled-component cache, and why the host may trust what it loads.
//!
//! A compiled component is native code that `Component::deserialize` runs
//! without checking it, so the cache is an edge of the sandbox:
//!
//! - **Whose:** the cache directory (and the engine's subdirectory in it)
//!   must belong to the user running `runbook` and be writable by nobody
//!   else, like ssh's `StrictModes`. A directory that fails that check is
//!   not used: the run compiles in memory and says so once on stderr.
//! - **Bound to its source:** every entry carries an HMAC-SHA256, under a
//!   key only this user can read (`key` in the cache directory, created
//!   0600), over the sha256 of the component it was compiled from and the
//!   compiled bytes. An entry is verified before it is loaded; an altered
//!   entry, or another plugin's entry copied under this digest's name, fails
//!   the check and is compiled afresh, never run.
//! - **Written safely:** entries are written to a temporary file created
//!   exclusively with a random name in the directory (no symlink is
//!   followed) and renamed into place; entries are opened without following
//!   symlinks.
//!
//! What is trusted: the `runbook` binary (its built-in plugins never touch
//! the cache), and the user's own key. What is verified: every cache entry,
//! against the digest of the component bytes read (and pinned, where the
//! manifest pins them) on this run.

use anyhow::Result;
use hmac::{KeyInit, Mac};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where a component came from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Compiled,
    DiskCache,
    Memory,
    /// Precompiled into the binary (a built-in plugin).
    Embedded,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const MAGIC: &[u8; 8] = b"RBCACHE1";
const MAC_LEN: usize = 32;
/// Largest entry read back.
const MAX_ENTRY: u64 = 512 * 1024 * 1024;

pub struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl DiskCache {
    /// The cache under `base`, for engines whose compatibility hash is
    /// `engine`. `Err` says why it cannot be trusted (the caller warns and
    /// goes on without it).
    pub fn open(base: &Path, engine: &str) -> Result<Self, String> {
        private_dir(base)?;
        let key = key(&base.join("key"))?;
        let dir = base.join(engine);
        private_dir(&dir)?;
        Ok(Self { dir, key })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    fn mac(&self, digest: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(b"runbook compiled component v1\0");
        mac.update(digest.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// The verified compiled bytes for `digest`, if the cache has them.
    pub fn load(&self, digest: &str) -> Option<Vec<u8>> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(digest))
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.uid() != euid() || meta.len() > MAX_ENTRY {
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        if rest.len() < MAC_LEN {
            return None;
        }
        let (tag, payload) = rest.split_at(MAC_LEN);
        self.mac(digest, payload).verify_slice(tag).ok()?;
        Some(payload.to_vec())
    }

    /// Keeps `payload`, compiled from the component with `digest`. The
    /// cache is an optimisation: failing to write is not an error.
    pub fn store(&self, digest: &str, payload: &[u8]) {
        let written = (|| -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".entry.")
                .tempfile_in(&self.dir)?;
            tmp.write_all(MAGIC)?;
            tmp.write_all(&self.mac(digest, payload).finalize().into_bytes())?;
            tmp.write_all(payload)?;
            tmp.persist(self.path(digest)).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = written {
            eprintln!(
                "warning: could not write the component cache `{}`: {e}",
                self.dir.display()
            );
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (0700) if missing; refuses one that is not a directory,
/// not ours, or writable by group or others.
fn private_dir(dir: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(format!("cannot create `{}`: {e}", dir.display()));
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("`{}` is not a directory", dir.display()));
    }
    if meta.uid() != euid() {
        return Err(format!(
            "`{}` belongs to uid {}, not to this user (uid {})",
            dir.display(),
            meta.uid(),
            euid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "`{}` is writable by others (mode {:o})",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// The user's cache key at `path`: 32 random bytes, created once, 0600.
fn key(path: &Path) -> Result<[u8; 32], String> {
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match created {
        Ok(mut file) => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| format!("no randomness for the cache key: {e}"))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("writing `{}`: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
            let meta = file
                .metadata()
                .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
            if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "`{}` must be a file of this user's readable by nobody else",
                    path.display()
                ));
            }
            let mut key = [0u8; 32];
            std::io::Read::read_exact(&mut &file, &mut key)
                .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("creating `{}`: {e}", path.display())),
    }
}

/// Opens the cache under `base`, or says once why it is not used.
pub fn open_or_warn(base: &Path, engine: &str) -> Option<DiskCache> {
    match DiskCache::open(base, engine) {
        Ok(c) => Some(c),
        Err(why) => {
            eprintln!(
                "warning: not using the component cache: {why}; components are compiled in memory for this run (set `RUNBOOK_CACHE_DIR` to a private directory)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_are_bound_to_their_digest_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), "engine").unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        cache.store(&a, b"compiled a");
        cache.store(&b, b"compiled b");
        assert_eq!(cache.load(&a).as_deref(), Some(&b"compiled a"[..]));
        // Another plugin's valid entry copied over this one's: refused.
        std::fs::copy(cache.path(&b), cache.path(&a)).unwrap();
        assert_eq!(cache.load(&a), None);
        // One bit flipped: refused.
        let mut bytes = std::fs::read(cache.path(&b)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(cache.path(&b), bytes).unwrap();
        assert_eq!(cache.load(&b), None);
        // A new key (another user's cache) verifies nothing of the old one.
        cache.store(&a, b"compiled a");
        std::fs::remove_file(dir.path().join("key")).unwrap();
        let other = DiskCache::open(dir.path(), "engine").unwrap();
        assert_eq!(other.load(&a), None);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("cache");
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = DiskCache::open(&base, "engine").err().unwrap();
        assert!(err.contains("is writable by others (mode 777)"), "{err}");
    }

    #[test]
    fn entries_and_temporaries_do_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), "engine").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let digest = "c".repeat(64);
        std::os::unix::fs::symlink(&victim, cache.path(&digest)).unwrap();
        assert_eq!(cache.load(&digest), None);
        cache.store(&digest, b"compiled c");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(cache.load(&digest).as_deref(), Some(&b"compiled c"[..]));
    }
}
