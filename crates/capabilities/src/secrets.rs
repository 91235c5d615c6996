//! Secrets an environment file names but never holds: a variable
//! (`password_env = "SESSION_STORE_PASSWORD"`) or an AWS Secrets Manager
//! secret (`password_secret = "prod/session-store"`, or
//! `"prod/session-store#password"` for one key of a JSON secret).
//!
//! - At load, each secret is named one way, never both; a variable must
//!   be set (each capability's own check); a secret's id must look like
//!   one (checked without echoing it: a value pasted into the field may be
//!   the secret itself).
//! - Secrets Manager is asked once per run, before any step
//!   ([`fetch`], from `Environment::backends`), with `[aws]`'s timeouts and
//!   retries; a secret that cannot be read stops the run there, naming the
//!   field and the secret's id. Values live in memory only ([`Secret`]
//!   prints as `<secret>`), are never journaled, reported or exported.

use crate::aws::Aws;
use anyhow::Result;
use runbook_core::error::hinted;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A secret's value. Its `Debug` and `Display` say `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place it is sent (a header, an AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// How a field names its secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// An AWS Secrets Manager secret (name or ARN) and, after `#`, the key
    /// of a JSON secret to take.
    Manager { id: String, key: Option<String> },
}

/// The longest secret name taken (Secrets Manager's own limit), and ARN.
const MAX_NAME: usize = 512;
const MAX_ARN: usize = 2048;

impl SecretRef {
    /// The one of `{field}_env` and `{field}_secret` that is set (both is
    /// an error). `at` names the section (`` `redis.session-store` ``). A
    /// variable's name is checked by its capability as before; a secret's
    /// id here, without echoing it.
    pub fn either(
        at: &str,
        field: &str,
        env: Option<&String>,
        secret: Option<&String>,
    ) -> Result<Option<SecretRef>, String> {
        match (env, secret) {
            (Some(_), Some(_)) => Err(format!(
                "{at}: `{field}_env` and `{field}_secret` both name the {}: keep one",
                field.replace('_', " ")
            )),
            (None, None) => Ok(None),
            (Some(var), None) => Ok(Some(SecretRef::Env(var.clone()))),
            (None, Some(text)) => Self::manager(at, field, text).map(Some),
        }
    }

    /// `{field}_secret`'s value: a Secrets Manager secret's name or ARN,
    /// and after `#` the key of a JSON secret.
    pub fn manager(at: &str, field: &str, text: &str) -> Result<SecretRef, String> {
        let (id, key) = match text.split_once('#') {
            Some((id, key)) => (id, Some(key)),
            None => (text, None),
        };
        // A name (letters, digits and `/_+=.@-`), or a Secrets Manager
        // ARN: a `:` anywhere else (a pasted webhook URL) is refused.
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= MAX_NAME
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
        };
        let id_ok = match id.strip_prefix("arn:") {
            Some(rest) => {
                let parts: Vec<&str> = rest.splitn(6, ':').collect();
                id.len() <= MAX_ARN
                    && parts.len() == 6
                    && parts[0].starts_with("aws")
                    && parts[1] == "secretsmanager"
                    && parts[3].len() == 12
                    && parts[3].bytes().all(|b| b.is_ascii_digit())
                    && parts[4] == "secret"
                    && name_ok(parts[5])
            }
            None => name_ok(id),
        };
        let key_ok = key.is_none_or(|k| {
            !k.is_empty()
                && k.len() <= 256
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        });
        if !id_ok || !key_ok {
            return Err(format!(
                "{at}: `{field}_secret` must be a Secrets Manager secret's name (letters, digits and `/_+=.@-`) or ARN, optionally `#KEY` for one key of a JSON secret; not the {} itself",
                field.replace('_', " ")
            ));
        }
        Ok(SecretRef::Manager {
            id: id.to_string(),
            key: key.map(str::to_string),
        })
    }
}

/// How an error names secret `id`: by its id when it reads as a name
/// (an ARN, or a path like `prod/session-store`), else only as "the
/// secret this field names": a name of letters and digits alone may be a
/// routing key pasted into the field.
fn shown(id: &str) -> String {
    if id.starts_with("arn:") || id.contains('/') {
        format!("secret `{id}`")
    } else {
        "the secret this field names".to_string()
    }
}

/// The secrets one run uses, read once: what [`SecretRef`]s resolve to.
#[derive(Default, Clone)]
pub struct Secrets {
    fetched: BTreeMap<String, Secret>,
}

impl Secrets {
    /// Secrets as if read from Secrets Manager (tests of the backends).
    #[cfg(test)]
    pub(crate) fn with_fetched(mut self, id: &str, value: &str) -> Self {
        self.fetched.insert(id.to_string(), Secret::new(value));
        self
    }

    /// `r`'s value: a variable read now (checked at load to be set), a
    /// Secrets Manager secret from what [`fetch`] read.
    pub fn resolve(&self, at: &str, r: &SecretRef) -> Result<Secret> {
        match r {
            SecretRef::Env(var) => std::env::var(var).map(Secret::new).map_err(|_| {
                hinted(
                    format!("{at}: the variable `{var}` is not set (any more)"),
                    "export it before the run",
                )
            }),
            SecretRef::Manager { id, key } => {
                let whole = self.fetched.get(id).ok_or_else(|| {
                    anyhow::anyhow!("{at}: secret `{id}` was not read before the run (a bug)")
                })?;
                let Some(key) = key else {
                    return Ok(whole.clone());
                };
                let value: serde_json::Value = serde_json::from_str(whole.expose())
                    .map_err(|_| {
                        hinted(
                            format!("{at}: {} is not a JSON object, so it has no key `{key}`", shown(id)),
                            format!("name the whole secret (`{id}`), or store it as JSON with a `{key}` key"),
                        )
                    })?;
                match value.get(key) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => {
                        Ok(Secret::new(s.as_str()))
                    }
                    _ => Err(hinted(
                        format!(
                            "{at}: {} has no non-empty string under key `{key}`",
                            shown(id)
                        ),
                        "check the key's name in the secret (`aws secretsmanager get-secret-value`)",
                    )),
                }
            }
        }
    }
}

/// Reads each Secrets Manager secret `refs` name, once, with `[aws]`'s
/// timeouts and retries. `refs`: where each is named, and what.
pub async fn fetch(aws: &Aws, refs: &[(String, SecretRef)]) -> Result<Secrets> {
    let mut out = Secrets::default();
    let ids: BTreeMap<&str, &str> = refs
        .iter()
        .filter_map(|(at, r)| match r {
            SecretRef::Manager { id, .. } => Some((id.as_str(), at.as_str())),
            SecretRef::Env(_) => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut conf = aws_sdk_secretsmanager::config::Builder::from(&aws.sdk);
    if let Some(url) = aws.endpoint("secretsmanager") {
        conf = conf.endpoint_url(url);
    }
    let client = aws_sdk_secretsmanager::Client::from_conf(conf.build());
    // Each call bounded on its own (a little over `[aws]`'s operation
    // timeout, which includes its retries), and said by its field.
    let limit = aws.operation_timeout() + std::time::Duration::from_secs(1);
    for (id, at) in ids {
        let name = shown(id);
        let call = client.get_secret_value().secret_id(id).send();
        let answer = match tokio::time::timeout(limit, call).await {
            Err(_) => {
                return Err(hinted(
                    format!(
                        "{at}: {name} could not be read from AWS Secrets Manager: no answer within {} ms",
                        limit.as_millis()
                    ),
                    "check `[aws]` (region, endpoint) and the network to Secrets Manager",
                ));
            }
            Ok(Err(e)) => {
                // The error's code and message, as every AWS error reads.
                let why = crate::aws::aws_error("GetSecretValue", e);
                return Err(hinted(
                    format!(
                        "{at}: {name} could not be read from AWS Secrets Manager: {}",
                        crate::limits::clip(why.message().to_string(), 400)
                    ),
                    "check the secret's name and region, and that these credentials may call `secretsmanager:GetSecretValue` on it",
                ));
            }
            Ok(Ok(a)) => a,
        };
        let Some(value) = answer.secret_string().filter(|s| !s.is_empty()) else {
            return Err(hinted(
                format!("{at}: {name} has no text value (a binary secret, or empty)"),
                "store the value as the secret's string",
            ));
        };
        out.fetched.insert(id.to_string(), Secret::new(value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_named_one_way_and_never_echoed() {
        let at = "`redis.store`";
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            SecretRef::either(at, "password", None, s("prod/store#password").as_ref()).unwrap(),
            Some(SecretRef::Manager {
                id: "prod/store".into(),
                key: Some("password".into())
            })
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/store-AbCdEf";
        assert_eq!(
            SecretRef::manager(at, "password", arn).unwrap(),
            SecretRef::Manager {
                id: arn.into(),
                key: None
            }
        );
        for (env, secret, says) in [
            (s("A"), s("b"), "both name the password"),
            (None, s("hunter2 is my password"), "not the password itself"),
            (None, s("prod/store#"), "not the password itself"),
            (None, s(""), "not the password itself"),
            (
                None,
                s("https://hooks.slack.com/services/T000/B000/XXXX"),
                "not the password itself",
            ),
            (
                None,
                s("arn:aws:s3:::bucket/key"),
                "not the password itself",
            ),
        ] {
            let err = SecretRef::either(at, "password", env.as_ref(), secret.as_ref()).unwrap_err();
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert_eq!(SecretRef::either(at, "password", None, None).unwrap(), None);
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<secret> <secret>");
    }

    #[test]
    fn a_json_secrets_key_is_taken_and_a_missing_one_said() {
        let mut secrets = Secrets::default();
        secrets.fetched.insert(
            "prod/store".into(),
            Secret::new(r#"{"password":"hunter2","user":"app"}"#),
        );
        secrets
            .fetched
            .insert("prod/plain".into(), Secret::new("hunter3"));
        let r = |id: &str, key: Option<&str>| SecretRef::Manager {
            id: id.into(),
            key: key.map(str::to_string),
        };
        let got = secrets
            .resolve("x", &r("prod/store", Some("password")))
            .unwrap();
        assert_eq!(got.expose(), "hunter2");
        assert_eq!(
            secrets
                .resolve("x", &r("prod/plain", None))
                .unwrap()
                .expose(),
            "hunter3"
        );
        for (id, key, says) in [
            (
                "prod/store",
                Some("pass"),
                "no non-empty string under key `pass`",
            ),
            ("prod/plain", Some("password"), "not a JSON object"),
        ] {
            let err = format!("{:#}", secrets.resolve("x", &r(id, key)).unwrap_err());
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("hunter"), "{err}");
        }
    }
}
