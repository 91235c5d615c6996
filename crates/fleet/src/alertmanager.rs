//! Alertmanager's webhook (`POST /alertmanager` on `runbook serve`): the
//! version 4 payload, who may send it, and each alert in it as triggers see
//! it.
//!
//! Alertmanager sends what its receiver's `http_config` says: a bearer
//! token (`authorization.credentials_file`) or basic authentication
//! (`basic_auth.password_file`). The triggers file names files holding the
//! same secret, readable by their owner only; a delivery without it is
//! refused before its body is read. Nothing else about a delivery is
//! trusted either: unknown fields, another version, more alerts than
//! Alertmanager would group, or text past the caps are refused whole.

use anyhow::{Result, anyhow};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Most alerts one notification may carry (Alertmanager's `max_alerts`
/// is unlimited by default). A larger group is refused whole, every time
/// it is sent again: set the receiver's `max_alerts` below this, and watch
/// for `truncatedAlerts` in the log.
pub const MAX_ALERTS: usize = 10_000;

/// The largest notification read (an alert storm of thousands of alerts
/// with their annotations fits).
pub const MAX_BODY: usize = 8 << 20;

/// `[alertmanager]` in the triggers file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// A file holding the bearer token Alertmanager sends.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication: the user, and a file holding the password.
    pub basic_user: Option<String>,
    pub basic_password_file: Option<PathBuf>,
    /// Mutual TLS: the CA (PEM) Alertmanager's client certificate must
    /// chain to (its `http_config.tls_config` `cert_file`). Needs `runbook
    /// serve --tls-cert`; with it, credentials are optional.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(skip)]
    secret: Option<Secret>,
}

#[derive(Clone)]
enum Secret {
    Bearer(Vec<u8>),
    /// `Basic BASE64(user:password)`, as the header carries it.
    Basic(Vec<u8>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Auth {
    /// Checks the section on its own (no file is read).
    pub fn check(&self) -> Result<(), String> {
        match (&self.bearer_token_file, &self.basic_user, &self.basic_password_file) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            (Some(_), _, _) => Err(
                "`[alertmanager]` has both `bearer_token_file` and basic authentication: use one"
                    .into(),
            ),
            (None, None, None) if self.client_ca_file.is_some() => Ok(()),
            (None, None, None) => Err(
                "`[alertmanager]` names no credentials: give `bearer_token_file`, or `basic_user` and `basic_password_file` (what the receiver's `http_config` sends), or `client_ca_file` for client certificates"
                    .into(),
            ),
            _ => Err("`alertmanager.basic_user` and `basic_password_file` go together".into()),
        }
    }

    /// Resolves the files against `base` and reads the secret: a file
    /// others can read, or an empty one, is refused.
    pub fn load(&mut self, base: &Path) -> Result<()> {
        if let Some(ca) = &mut self.client_ca_file
            && ca.is_relative()
        {
            *ca = base.join(&*ca);
        }
        let read = |p: &mut PathBuf, field: &str| -> Result<Vec<u8>> {
            if p.is_relative() {
                *p = base.join(&*p);
            }
            let meta = std::fs::metadata(&*p)
                .map_err(|e| anyhow!("`alertmanager.{field}` `{}`: {e}", p.display()))?;
            if meta.mode() & 0o077 != 0 {
                return Err(anyhow!(
                    "`alertmanager.{field}` `{}` can be read by others (mode {:o}): `chmod 600` it",
                    p.display(),
                    meta.mode() & 0o777
                ));
            }
            let text = runbook_core::files::read_text(p, "credentials file")?;
            // As Alertmanager reads its own `credentials_file`.
            let secret = text.trim();
            if secret.is_empty() || secret.len() > 4096 {
                return Err(anyhow!(
                    "`alertmanager.{field}` `{}` holds no secret (or one over 4096 bytes)",
                    p.display()
                ));
            }
            Ok(secret.as_bytes().to_vec())
        };
        self.secret = Some(match (&mut self.bearer_token_file, &self.basic_user) {
            (Some(p), _) => Secret::Bearer(read(p, "bearer_token_file")?),
            (None, Some(user)) => {
                let user = user.clone();
                let p = self
                    .basic_password_file
                    .as_mut()
                    .ok_or_else(|| anyhow!("`alertmanager.basic_password_file` is missing"))?;
                let password = read(p, "basic_password_file")?;
                let mut pair = user.into_bytes();
                pair.push(b':');
                pair.extend_from_slice(&password);
                use base64::Engine;
                Secret::Basic(
                    base64::engine::general_purpose::STANDARD
                        .encode(pair)
                        .into_bytes(),
                )
            }
            (None, None) if self.client_ca_file.is_some() => return Ok(()),
            (None, None) => return Err(anyhow!("`[alertmanager]` names no credentials")),
        });
        Ok(())
    }

    /// Whether the `Authorization` header is the configured secret
    /// (compared in constant time). Nothing passes before [`Auth::load`].
    /// With `client_ca_file`, the connection must also have presented a
    /// client certificate that chains to it (`client_certificate`, which
    /// rustls verified).
    pub fn allows(&self, header: Option<&[u8]>, client_certificate: bool) -> bool {
        if self.client_ca_file.is_some() {
            if !client_certificate {
                return false;
            }
            if self.secret.is_none() {
                return true;
            }
        }
        let (Some(secret), Some(header)) = (&self.secret, header) else {
            return false;
        };
        let (scheme, expected): (&[u8], &[u8]) = match secret {
            Secret::Bearer(t) => (b"Bearer ", t),
            Secret::Basic(b) => (b"Basic ", b),
        };
        // Digests, so neither the content nor the length of the secret
        // shows in how long a wrong guess takes.
        use sha2::Digest;
        match header.split_at_checked(scheme.len()) {
            Some((s, given)) if s.eq_ignore_ascii_case(scheme) => {
                bool::from(sha2::Sha256::digest(given).ct_eq(&sha2::Sha256::digest(expected)))
            }
            _ => false,
        }
    }
}

/// A webhook notification, version 4.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: String,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Notification {
    /// The payload, or why it is refused.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let n: Self = serde_json::from_slice(body)
            .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
        if n.version != "4" {
            return Err(format!(
                "webhook payload version `{}`: this host reads version 4",
                clip(&n.version)
            ));
        }
        if n.alerts.is_empty() || n.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "{} alerts in one notification: between 1 and {MAX_ALERTS} are taken",
                n.alerts.len()
            ));
        }
        for a in &n.alerts {
            if !matches!(a.status.as_str(), "firing" | "resolved") {
                return Err(format!(
                    "an alert's status is `{}`, not `firing` or `resolved`",
                    clip(&a.status)
                ));
            }
            let plain = |s: &str| {
                !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic())
            };
            if !plain(&a.fingerprint) || !plain(&a.starts_at) {
                return Err(
                    "an alert's `fingerprint` or `startsAt` is empty, too long or not plain text"
                        .into(),
                );
            }
            if !a.labels.get("alertname").is_some_and(|n| plain(n)) {
                return Err("an alert has no plain `alertname` label".into());
            }
        }
        Ok(n)
    }
}

/// At most 64 characters of text from an unauthenticated-looking body.
fn clip(s: &str) -> String {
    s.chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Where the resolution of `incident`'s alert is kept in the fleet's state.
fn resolved_key(incident: &str) -> String {
    format!(
        "alert-resolved.{}",
        &runbook_core::hash::sha256_hex(incident.as_bytes())[..32]
    )
}

/// Records that the alert behind `incident` resolved (`ends_at`, as
/// Alertmanager says), for `runbook show` of its run; the same again
/// (a re-sent notification) changes nothing.
pub fn record_resolved(fleet: &crate::nats::Fleet, incident: &str, ends_at: &str) -> Result<()> {
    let value = serde_json::json!({
        "incident": incident,
        "ends_at": ends_at,
        "noted_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    let incident = incident.to_string();
    fleet.change(
        "recording a resolved alert",
        &resolved_key(&incident),
        move |v| {
            if v["incident"] == incident.as_str() && v["ends_at"] == value["ends_at"] {
                return false;
            }
            *v = value.clone();
            true
        },
    )?;
    Ok(())
}

/// The recorded resolution of `incident`'s alert, if any.
pub fn resolved(fleet: &crate::nats::Fleet, incident: &str) -> Result<Option<serde_json::Value>> {
    let (v, _) = fleet.read("reading a resolved alert", &resolved_key(incident))?;
    Ok(Some(v).filter(|v| v["incident"] == incident))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(alerts: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"AuthSlow\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "runbook",
            "groupLabels": {"alertname": "AuthSlow"},
            "commonLabels": {"alertname": "AuthSlow"},
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": alerts,
        }))
        .unwrap()
    }

    fn alert() -> serde_json::Value {
        serde_json::json!({
            "status": "firing",
            "labels": {"alertname": "AuthSlow", "service": "auth-service"},
            "annotations": {},
            "startsAt": "2026-12-03T23:10:01.123Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "c2f5a1b2d3e4f506",
        })
    }

    #[test]
    fn a_version_4_payload_is_read_and_anything_else_refused() {
        let n = Notification::parse(&payload(serde_json::json!([alert()]))).unwrap();
        assert_eq!(n.alerts[0].name(), "AuthSlow");
        let mut extra = alert();
        extra["silenced"] = true.into();
        let e = Notification::parse(&payload(serde_json::json!([extra]))).unwrap_err();
        assert!(e.contains("unknown field `silenced`"), "{e}");
        let mut v3: serde_json::Value =
            serde_json::from_slice(&payload(serde_json::json!([alert()]))).unwrap();
        v3["version"] = "3".into();
        let e = Notification::parse(&serde_json::to_vec(&v3).unwrap()).unwrap_err();
        assert!(e.contains("version `3`"), "{e}");
        assert!(Notification::parse(&payload(serde_json::json!([]))).is_err());
        let mut odd = alert();
        odd["status"] = "pending".into();
        assert!(Notification::parse(&payload(serde_json::json!([odd]))).is_err());
        let mut nameless = alert();
        nameless["labels"] = serde_json::json!({"service": "x"});
        assert!(Notification::parse(&payload(serde_json::json!([nameless]))).is_err());
        let mut long = alert();
        long["fingerprint"] = "f".repeat(200).into();
        assert!(Notification::parse(&payload(serde_json::json!([long]))).is_err());
        assert!(Notification::parse(b"{").is_err());
    }

    #[test]
    fn only_the_configured_secret_passes() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cr3t\n").unwrap();
        let mut auth = Auth {
            bearer_token_file: Some("token".into()),
            basic_user: None,
            basic_password_file: None,
            client_ca_file: None,
            secret: None,
        };
        assert!(
            !auth.allows(Some(b"Bearer s3cr3t"), false),
            "nothing before load"
        );
        // Readable by others: refused.
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let e = auth.clone().load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        auth.load(dir.path()).unwrap();
        assert!(auth.allows(Some(b"Bearer s3cr3t"), false));
        assert!(auth.allows(Some(b"bearer s3cr3t"), false));
        for wrong in [
            &b"Bearer s3cr3"[..],
            b"Bearer s3cr3t2",
            b"Basic s3cr3t",
            b"s3cr3t",
            b"",
        ] {
            assert!(
                !auth.allows(Some(wrong), false),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!auth.allows(None, false));
        std::fs::write(dir.path().join("pw"), "hunter2").unwrap();
        std::fs::set_permissions(
            dir.path().join("pw"),
            std::os::unix::fs::PermissionsExt::from_mode(0o400),
        )
        .unwrap();
        let mut basic = Auth {
            bearer_token_file: None,
            basic_user: Some("am".into()),
            basic_password_file: Some("pw".into()),
            client_ca_file: None,
            secret: None,
        };
        basic.check().unwrap();
        basic.load(dir.path()).unwrap();
        // base64("am:hunter2")
        assert!(basic.allows(Some(b"Basic YW06aHVudGVyMg=="), false));
        assert!(!basic.allows(Some(b"Bearer hunter2"), false));
        assert!(format!("{basic:?}").contains("Secret(…)"));
        assert!(!format!("{basic:?}").contains("hunter2"));
    }

    #[test]
    fn with_a_client_ca_a_verified_certificate_is_required_and_may_be_enough() {
        let dir = tempfile::tempdir().unwrap();
        let mut mtls = Auth {
            bearer_token_file: None,
            basic_user: None,
            basic_password_file: None,
            client_ca_file: Some("ca.pem".into()),
            secret: None,
        };
        mtls.check().unwrap();
        mtls.load(dir.path()).unwrap();
        assert_eq!(mtls.client_ca_file, Some(dir.path().join("ca.pem")));
        assert!(mtls.allows(None, true));
        assert!(!mtls.allows(None, false));
        // Both: the certificate and the token.
        std::fs::write(dir.path().join("token"), "s3cr3t").unwrap();
        std::fs::set_permissions(
            dir.path().join("token"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut both = Auth {
            bearer_token_file: Some("token".into()),
            ..mtls.clone()
        };
        both.load(dir.path()).unwrap();
        assert!(both.allows(Some(b"Bearer s3cr3t"), true));
        assert!(!both.allows(Some(b"Bearer s3cr3t"), false));
        assert!(!both.allows(None, true));
        // Neither credentials nor a CA: refused at load.
        let none = Auth {
            client_ca_file: None,
            ..mtls
        };
        assert!(none.check().unwrap_err().contains("client_ca_file"));
    }
}
