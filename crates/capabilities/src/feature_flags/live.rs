//! Feature flag stores: a JSON file (the default), a Redis hash, or SSM
//! Parameter Store, as `[flags]` in an environment says.
//!
//! The file store is safe across processes: a write takes an exclusive
//! lock on `FILE.lock` beside it, reads the file afresh, writes the whole
//! new content to a temporary file in the same directory (created
//! exclusively, never through a symlink), gives it the old file's mode and
//! owner, fsyncs it, renames it over the old one and fsyncs the directory.
//! A crash leaves the old or the new file, never half of one, and two runs
//! setting different keys never lose each other's write.

use super::FlagsBackend;
use crate::aws::{aws_error, bounded};
use crate::bindings::Error;
use crate::capability::LiveContext;
use crate::redis::live::{RedisTarget, answer, connect};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[flags]` in an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "store", rename_all = "kebab-case")]
pub enum FlagStore {
    /// A JSON object of key → value, rewritten atomically.
    File { path: PathBuf },
    /// A Redis hash.
    Redis {
        #[serde(flatten)]
        target: RedisTarget,
        hash: String,
    },
    /// SSM Parameter Store: flag `K` is parameter `{prefix}K`.
    Ssm { prefix: String },
}

pub fn backend(
    store: Option<&FlagStore>,
    ctx: &LiveContext,
) -> anyhow::Result<Arc<dyn FlagsBackend>> {
    Ok(match store {
        None => Arc::new(Unconfigured),
        Some(FlagStore::File { path }) => Arc::new(FileFlags::new(path.clone())),
        Some(FlagStore::Redis { target, hash }) => Arc::new(RedisFlags::new(
            target.resolved("`flags`", &ctx.secrets)?,
            hash.clone(),
        )),
        Some(FlagStore::Ssm { prefix }) => {
            let aws = ctx
                .aws
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("SSM needs the AWS settings"))?;
            let mut conf = aws_sdk_ssm::config::Builder::from(&aws.sdk);
            if let Some(url) = aws.endpoint("ssm") {
                conf = conf.endpoint_url(url);
            }
            Arc::new(SsmFlags::new(
                aws_sdk_ssm::Client::from_conf(conf.build()),
                aws.operation_timeout(),
                prefix.clone(),
            ))
        }
    })
}

/// When the environment names no store but a step uses flags. Load-time
/// validation refuses that; this is the backstop.
pub struct Unconfigured;

#[async_trait::async_trait]
impl FlagsBackend for Unconfigured {
    async fn get(&self, _key: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        Err(Error::Unavailable(
            "the environment defines no `[flags]` store".into(),
        ))
    }

    async fn set(&self, _: &str, _: &str, _: Instant) -> Result<Option<String>, Error> {
        Err(Error::Unavailable(
            "the environment defines no `[flags]` store".into(),
        ))
    }
}

/// Flags in a JSON object file; see the module docs.
pub struct FileFlags {
    path: PathBuf,
}

/// How long a writer waits for another process's lock on the flag file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

impl FileFlags {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Unavailable(format!("{what} flag file `{}`: {e}", self.path.display()))
    }

    fn read(&self) -> Result<BTreeMap<String, String>, Error> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) if text.trim().is_empty() => Ok(BTreeMap::new()),
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::Unavailable(format!(
                    "flag file `{}` is not a JSON object of strings: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(self.unavailable("reading", e)),
        }
    }

    fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// The exclusive cross-process lock, waited for up to [`LOCK_WAIT`] or
    /// the deadline.
    fn lock(&self, deadline: Instant) -> Result<std::fs::File, Error> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock_path = self.dir().join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.unavailable("locking", e))?;
        let until = (Instant::now() + LOCK_WAIT).min(deadline);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Timeout(format!(
                        "flag file `{}` stayed locked by another process",
                        self.path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(self.unavailable("locking", e));
                }
            }
        }
    }

    fn write(&self, flags: &BTreeMap<String, String>) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let text = serde_json::to_string_pretty(flags).map_err(std::io::Error::other)? + "\n";
        let old = std::fs::metadata(&self.path).ok();
        // Exclusive creation with a random name: no symlink is followed.
        let mut tmp = tempfile::Builder::new()
            .prefix(".flags.")
            .suffix(".tmp")
            .tempfile_in(self.dir())?;
        tmp.write_all(text.as_bytes())?;
        if let Some(old) = &old {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
            // Only root can give a file away; anyone else keeps their own.
            let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()));
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        std::fs::File::open(self.dir())?.sync_all()
    }

    fn set_blocking(
        &self,
        key: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<Option<String>, Error> {
        let _lock = self.lock(deadline)?;
        // The lock may have come late: a change past the deadline is not
        // made (the step has been stopped and nobody would record it).
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "flag file `{}`: the step's deadline passed while waiting for the lock",
                self.path.display()
            )));
        }
        let mut flags = self.read()?;
        let previous = flags.insert(key.to_string(), value.to_string());
        self.write(&flags)
            .map_err(|e| self.unavailable("writing", e))?;
        Ok(previous)
    }
}

#[async_trait::async_trait]
impl FlagsBackend for FileFlags {
    async fn get(&self, key: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        Ok(self.read()?.get(key).cloned())
    }

    async fn set(
        &self,
        key: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<Option<String>, Error> {
        let this = FileFlags::new(self.path.clone());
        let (key, value) = (key.to_string(), value.to_string());
        // File locks and fsync block: off the async workers.
        tokio::task::spawn_blocking(move || this.set_blocking(&key, &value, deadline))
            .await
            .map_err(|e| Error::Unavailable(format!("writing the flag file: {e}")))?
    }
}

/// Flags as fields of one Redis hash.
pub struct RedisFlags {
    target: RedisTarget,
    hash: String,
}

impl RedisFlags {
    pub fn new(target: RedisTarget, hash: String) -> Self {
        Self { target, hash }
    }
}

#[async_trait::async_trait]
impl FlagsBackend for RedisFlags {
    async fn get(&self, key: &str, deadline: Instant) -> Result<Option<String>, Error> {
        let mut conn = connect("flags", &self.target, deadline).await?;
        answer(
            "flags",
            &self.target,
            deadline,
            redis::cmd("HGET")
                .arg(&self.hash)
                .arg(key)
                .query_async(&mut conn),
        )
        .await
    }

    async fn set(
        &self,
        key: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<Option<String>, Error> {
        let mut conn = connect("flags", &self.target, deadline).await?;
        // One round trip, atomic on the server: the old value and the write.
        let (previous, _): (Option<String>, i64) = answer(
            "flags",
            &self.target,
            deadline,
            redis::pipe()
                .atomic()
                .cmd("HGET")
                .arg(&self.hash)
                .arg(key)
                .cmd("HSET")
                .arg(&self.hash)
                .arg(key)
                .arg(value)
                .query_async(&mut conn),
        )
        .await?;
        Ok(previous)
    }
}

/// Flag `K` is the String parameter `{prefix}K`.
pub struct SsmFlags {
    client: aws_sdk_ssm::Client,
    timeout: Duration,
    prefix: String,
}

impl SsmFlags {
    pub fn new(client: aws_sdk_ssm::Client, timeout: Duration, prefix: String) -> Self {
        Self {
            client,
            timeout,
            prefix,
        }
    }

    async fn read(&self, name: &str) -> Result<Option<String>, Error> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(aws_error(&format!("ssm `{name}`"), e)),
        }
    }
}

#[async_trait::async_trait]
impl FlagsBackend for SsmFlags {
    async fn get(&self, key: &str, deadline: Instant) -> Result<Option<String>, Error> {
        let name = format!("{}{key}", self.prefix);
        bounded(
            &format!("ssm `{name}`"),
            self.timeout,
            deadline,
            self.read(&name),
        )
        .await
    }

    async fn set(
        &self,
        key: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<Option<String>, Error> {
        let name = format!("{}{key}", self.prefix);
        let what = format!("ssm `{name}`");
        bounded(&what, self.timeout, deadline, async {
            let previous = self.read(&name).await?;
            self.client
                .put_parameter()
                .name(&name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .map_err(|e| aws_error(&what, e))?;
            Ok(previous)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn file_flags_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let flags = FileFlags::new(path.clone());
        assert_eq!(flags.get("A", far()).await.unwrap(), None);
        assert_eq!(flags.set("A", "true", far()).await.unwrap(), None);
        assert_eq!(
            flags.set("A", "false", far()).await.unwrap().as_deref(),
            Some("true")
        );
        let on_disk: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk["A"], "false");
        // No temporary files left behind: the flags and their lock file.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["flags.json", "flags.json.lock"]);
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            flags.get("A", far()).await.unwrap_err(),
            Error::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn a_rewrite_keeps_the_files_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        FileFlags::new(path.clone())
            .set("A", "1", far())
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Many writers of different keys, each with its own handle (as
    /// separate processes would have): none loses another's write.
    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        FileFlags::new(path.clone())
                            .set_blocking(&format!("K{i}_{j}"), "1", far())
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let on_disk: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk.len(), 80);
    }
}
