//! Feature flag stores: a JSON file (atomic write + fsync, the default), a
//! Redis hash, or SSM Parameter Store.

use super::{Blocking, aws_error};
use crate::bindings::Error;
use crate::capability::FlagsBackend;
use crate::environment::RedisTarget;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the environment names no store but a step uses flags. Load-time
/// validation refuses that; this is the backstop.
pub struct Unconfigured;

impl FlagsBackend for Unconfigured {
    fn get(&self, _key: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        Err(Error::Unavailable(
            "the environment defines no `[flags]` store".into(),
        ))
    }

    fn set(&self, _key: &str, _value: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        Err(Error::Unavailable(
            "the environment defines no `[flags]` store".into(),
        ))
    }
}

/// Flags in a JSON object file. Writes go to a temporary file in the same
/// directory, are fsynced, renamed over the old one, and the directory is
/// fsynced: a crash leaves the old or the new file, never half of one.
pub struct FileFlags {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileFlags {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
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
            Err(e) => Err(Error::Unavailable(format!(
                "reading flag file `{}`: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(&self, flags: &BTreeMap<String, String>) -> std::io::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(flags).map_err(std::io::Error::other)? + "\n";
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

impl FlagsBackend for FileFlags {
    fn get(&self, key: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        Ok(self.read()?.get(key).cloned())
    }

    fn set(&self, key: &str, value: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut flags = self.read()?;
        let previous = flags.insert(key.to_string(), value.to_string());
        self.write(&flags).map_err(|e| {
            Error::Unavailable(format!("writing flag file `{}`: {e}", self.path.display()))
        })?;
        Ok(previous)
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

impl FlagsBackend for RedisFlags {
    fn get(&self, key: &str, deadline: Instant) -> Result<Option<String>, Error> {
        let mut conn = super::redis::connect("flags", &self.target, deadline)?;
        redis::cmd("HGET")
            .arg(&self.hash)
            .arg(key)
            .query(&mut conn)
            .map_err(|e| super::redis::redis_error("flags", e))
    }

    fn set(&self, key: &str, value: &str, deadline: Instant) -> Result<Option<String>, Error> {
        let mut conn = super::redis::connect("flags", &self.target, deadline)?;
        // One round trip, atomic on the server: the old value and the write.
        let (previous, _): (Option<String>, i64) = redis::pipe()
            .atomic()
            .cmd("HGET")
            .arg(&self.hash)
            .arg(key)
            .cmd("HSET")
            .arg(&self.hash)
            .arg(key)
            .arg(value)
            .query(&mut conn)
            .map_err(|e| super::redis::redis_error("flags", e))?;
        Ok(previous)
    }
}

/// Flag `K` is the String parameter `{prefix}K`.
pub struct SsmFlags {
    client: aws_sdk_ssm::Client,
    blocking: Blocking,
    timeout: Duration,
    prefix: String,
}

impl SsmFlags {
    pub fn new(
        client: aws_sdk_ssm::Client,
        blocking: Blocking,
        timeout: Duration,
        prefix: String,
    ) -> Self {
        Self {
            client,
            blocking,
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

impl FlagsBackend for SsmFlags {
    fn get(&self, key: &str, deadline: Instant) -> Result<Option<String>, Error> {
        let name = format!("{}{key}", self.prefix);
        self.blocking.run(
            &format!("ssm `{name}`"),
            self.timeout,
            deadline,
            self.read(&name),
        )
    }

    fn set(&self, key: &str, value: &str, deadline: Instant) -> Result<Option<String>, Error> {
        let name = format!("{}{key}", self.prefix);
        let what = format!("ssm `{name}`");
        self.blocking.run(&what, self.timeout, deadline, async {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_flags_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let flags = FileFlags::new(path.clone());
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(flags.get("A", far).unwrap(), None);
        assert_eq!(flags.set("A", "true", far).unwrap(), None);
        assert_eq!(
            flags.set("A", "false", far).unwrap().as_deref(),
            Some("true")
        );
        let on_disk: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk["A"], "false");
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            flags.get("A", far).unwrap_err(),
            Error::Unavailable(_)
        ));
    }
}
