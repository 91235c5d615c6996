//! SNS messages over HTTP, checked as AWS documents it
//! (<https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html>):
//!
//! - the signing certificate's URL must be HTTPS on an SNS host of AWS
//!   (`sns.REGION.amazonaws.com`), so it is fetched over TLS from AWS and
//!   from nowhere a sender chooses (the path must be SNS's certificate
//!   path, `/SimpleNotificationService-ID.pem`, with no query);
//! - the signature (`SignatureVersion` 2: RSA PKCS #1 v1.5 with SHA-256)
//!   must verify over the fields the message type signs, in their order;
//!   version 1 (SHA-1) is refused: set the topic's `SignatureVersion` to 2;
//! - a subscription is confirmed by fetching its `SubscribeURL`, which
//!   must pass the same host check, and only after its message verified.
//!
//! For a local SNS (moto, LocalStack) `AWS_ENDPOINT_URL_SNS` (else
//! `AWS_ENDPOINT_URL`) names where such URLs are fetched instead, as the
//! AWS SDKs do; those requests are signed with SigV4 from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, which is how such emulators
//! tell which service a request is for. The host and path checks still
//! apply, and only a certificate path or a verified message's
//! confirmation URL is ever fetched.

use anyhow::{Result, anyhow};
use base64::Engine;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The SNS envelope of an HTTP delivery. Unknown fields are kept out of
/// the way, not refused: AWS adds to the envelope (`MessageAttributes`),
/// and what the signature covers is named here.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    pub subject: Option<String>,
    pub token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
}

/// Why a message was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// Not from SNS, altered, or not for us: answered 403, never retried
    /// into a run.
    Bad(String),
    /// Could not be checked now (the certificate did not come): answered
    /// 503, so SNS delivers it again.
    Unavailable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Bad(why) | Refusal::Unavailable(why) => f.write_str(why),
        }
    }
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        serde_json::from_slice(body).map_err(|e| {
            Refusal::Bad(format!(
                "not an SNS message (JSON with `Type`, `MessageId`, `TopicArn`, `Message`, `Timestamp`, `Signature`, `SigningCertURL`): {e}"
            ))
        })
    }

    /// The text SNS signed: each signed field's name and value on lines of
    /// their own, in this order.
    pub fn string_to_sign(&self) -> Result<String, Refusal> {
        let mut out = String::new();
        let mut field = |name: &str, value: Option<&str>| -> Result<(), Refusal> {
            let value = value.ok_or_else(|| {
                Refusal::Bad(format!("a `{}` message without `{name}`", self.kind))
            })?;
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
            Ok(())
        };
        match self.kind.as_str() {
            "Notification" => {
                field("Message", Some(&self.message))?;
                field("MessageId", Some(&self.message_id))?;
                if let Some(s) = &self.subject {
                    field("Subject", Some(s))?;
                }
                field("Timestamp", Some(&self.timestamp))?;
                field("TopicArn", Some(&self.topic_arn))?;
                field("Type", Some(&self.kind))?;
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                field("Message", Some(&self.message))?;
                field("MessageId", Some(&self.message_id))?;
                field("SubscribeURL", self.subscribe_url.as_deref())?;
                field("Timestamp", Some(&self.timestamp))?;
                field("Token", self.token.as_deref())?;
                field("TopicArn", Some(&self.topic_arn))?;
                field("Type", Some(&self.kind))?;
            }
            other => return Err(Refusal::Bad(format!("unknown SNS message type `{other}`"))),
        }
        Ok(out)
    }
}

/// `url` if it is HTTPS on an SNS host of AWS, with the region it names.
pub fn aws_sns_url(url: &str, what: &str) -> Result<(url::Url, String), Refusal> {
    let bad = |why: &str| Refusal::Bad(format!("`{what}` `{url}` {why}"));
    let parsed = url::Url::parse(url).map_err(|_| bad("is not a URL"))?;
    if parsed.scheme() != "https" {
        return Err(bad("is not HTTPS"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.port().is_some() {
        return Err(bad("has a user, password or port"));
    }
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .filter(|r| {
            !r.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .ok_or_else(|| bad("is not on an SNS host of AWS (`sns.REGION.amazonaws.com`)"))?;
    Ok((parsed.clone(), region.to_string()))
}

/// The path SNS serves its signing certificates at, and nothing more: a
/// query or another path would have this process fetch (and, with an
/// endpoint override, sign) a request the sender chose.
fn is_certificate_path(url: &url::Url) -> bool {
    url.query().is_none()
        && url.fragment().is_none()
        && url
            .path()
            .strip_prefix("/SimpleNotificationService-")
            .and_then(|p| p.strip_suffix(".pem"))
            .is_some_and(|id| {
                !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
            })
}

/// Checks messages' signatures and confirms subscriptions.
pub struct Verifier {
    http: reqwest::Client,
    /// Where AWS URLs are fetched instead (a local SNS), and the
    /// credentials requests there are signed with.
    endpoint: Option<(url::Url, Option<Credentials>)>,
    /// Certificates by URL (DER), at most `MAX_CERTS`.
    certs: Mutex<HashMap<String, Vec<u8>>>,
    /// When each of the last certificate fetches set out: at most
    /// `FETCHES_PER_MINUTE` a minute, whoever sends messages (SNS itself
    /// uses one certificate a region for months).
    fetches: Mutex<std::collections::VecDeque<std::time::Instant>>,
    /// Certificate URLs that did not give a certificate, and when: not
    /// fetched again for `FAILED_FOR`.
    failed: Mutex<HashMap<String, std::time::Instant>>,
}

const FETCHES_PER_MINUTE: usize = 10;
const FAILED_FOR: Duration = Duration::from_secs(60);
/// How far a message's `Timestamp` may be from now (SNS retries a
/// delivery for about an hour).
const FRESH_FOR: Duration = Duration::from_secs(3600);

/// Access key id, secret, session token: what a request to a local SNS
/// is signed with.
type Credentials = (String, String, Option<String>);

const MAX_CERTS: usize = 32;
const MAX_CERT_BYTES: usize = 64 * 1024;
const ATTEMPTS: u32 = 3;

impl Verifier {
    /// From the environment: `AWS_ENDPOINT_URL_SNS` / `AWS_ENDPOINT_URL`.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = match var("AWS_ENDPOINT_URL_SNS").or_else(|| var("AWS_ENDPOINT_URL")) {
            Some(u) => {
                let url = url::Url::parse(&u).map_err(|e| {
                    anyhow!("`AWS_ENDPOINT_URL_SNS` / `AWS_ENDPOINT_URL` `{u}` is not a URL: {e}")
                })?;
                let creds = var("AWS_ACCESS_KEY_ID")
                    .zip(var("AWS_SECRET_ACCESS_KEY"))
                    .map(|(a, s)| (a, s, var("AWS_SESSION_TOKEN")));
                Some((url, creds))
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            // A certificate or confirmation URL is fetched where it says,
            // never where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            endpoint,
            certs: Mutex::new(HashMap::new()),
            fetches: Mutex::new(std::collections::VecDeque::new()),
            failed: Mutex::new(HashMap::new()),
        })
    }

    /// Where AWS URLs go instead, for the log.
    pub fn endpoint(&self) -> Option<&url::Url> {
        self.endpoint.as_ref().map(|(u, _)| u)
    }

    /// Checks that `m` was signed by SNS and not altered since.
    pub async fn verify(&self, m: &Envelope) -> Result<(), Refusal> {
        if m.signature_version != "2" {
            return Err(Refusal::Bad(format!(
                "`SignatureVersion` `{}` is not accepted: only 2 (SHA-256); set the topic attribute `SignatureVersion` to `2`",
                m.signature_version
            )));
        }
        // Cheap checks first: nothing is fetched for a message that is
        // stale, from the future, or of a type SNS does not send.
        fresh(&m.timestamp, std::time::SystemTime::now())?;
        let (url, region) = aws_sns_url(&m.signing_cert_url, "SigningCertURL")?;
        if !is_certificate_path(&url) {
            return Err(Refusal::Bad(format!(
                "`SigningCertURL` `{}` does not name an SNS certificate (`/SimpleNotificationService-ID.pem`, no query)",
                m.signing_cert_url
            )));
        }
        let text = m.string_to_sign()?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(m.signature.trim())
            .map_err(|_| Refusal::Bad("`Signature` is not base64".into()))?;
        let der = self.cert(&url, &region).await?;
        let cert = CertificateDer::from(der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&cert).map_err(|e| {
            Refusal::Bad(format!(
                "the certificate at `{}` cannot be read: {e:?}",
                m.signing_cert_url
            ))
        })?;
        ee.verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            text.as_bytes(),
            &signature,
        )
        .map_err(|_| {
            Refusal::Bad(
                "the signature does not match the message: altered, or not from SNS".into(),
            )
        })
    }

    /// Confirms a verified `SubscriptionConfirmation` by fetching its
    /// `SubscribeURL`.
    pub async fn confirm(&self, m: &Envelope) -> Result<(), Refusal> {
        let url = m.subscribe_url.as_deref().unwrap_or_default();
        let (url, region) = aws_sns_url(url, "SubscribeURL")?;
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        if query.get("Action").map(String::as_str) != Some("ConfirmSubscription")
            || query.get("TopicArn") != Some(&m.topic_arn)
        {
            return Err(Refusal::Bad(
                "`SubscribeURL` does not confirm this message's topic".into(),
            ));
        }
        self.get(&url, &region).await.map(|_| ())
    }

    async fn cert(&self, url: &url::Url, region: &str) -> Result<Vec<u8>, Refusal> {
        let key = url.as_str().to_string();
        if let Some(der) = self
            .certs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(der.clone());
        }
        self.may_fetch(&key)?;
        let fetched = self.get(url, region).await.and_then(|pem| {
            CertificateDer::from_pem_slice(&pem)
                .map(|d| d.to_vec())
                .map_err(|_| Refusal::Bad(format!("`{url}` is not a PEM certificate")))
        });
        let der = match fetched {
            Ok(der) => der,
            Err(e) => {
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                failed.retain(|_, at| at.elapsed() < FAILED_FOR);
                if failed.len() < MAX_CERTS * 8 {
                    failed.insert(key, std::time::Instant::now());
                }
                return Err(e);
            }
        };
        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        if certs.len() >= MAX_CERTS
            && let Some(old) = certs.keys().next().cloned()
        {
            certs.remove(&old);
        }
        certs.insert(key, der.clone());
        Ok(der)
    }

    /// Whether a certificate not in the cache may be fetched now: not one
    /// that just failed, and not more than `FETCHES_PER_MINUTE`. Refused
    /// as unavailable, so SNS delivers a real message again later.
    fn may_fetch(&self, key: &str) -> Result<(), Refusal> {
        if let Some(at) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|at| at.elapsed() < FAILED_FOR)
        {
            return Err(Refusal::Unavailable(format!(
                "`{key}` gave no certificate {} s ago; not fetched again yet",
                at.elapsed().as_secs()
            )));
        }
        let mut fetches = self.fetches.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        while fetches
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            fetches.pop_front();
        }
        if fetches.len() >= FETCHES_PER_MINUTE {
            return Err(Refusal::Unavailable(format!(
                "{FETCHES_PER_MINUTE} certificates were fetched in the last minute; `{key}` waits"
            )));
        }
        fetches.push_back(now);
        Ok(())
    }

    /// GETs `url` (or its path and query at the endpoint override), a few
    /// times at most, each bounded.
    async fn get(&self, url: &url::Url, region: &str) -> Result<Vec<u8>, Refusal> {
        let (target, creds) = match &self.endpoint {
            Some((base, creds)) => {
                let mut t = base.clone();
                t.set_path(url.path());
                t.set_query(url.query());
                (t, creds.as_ref())
            }
            None => (url.clone(), None),
        };
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut request = self.http.get(target.as_str());
            if let Some((id, secret, token)) = creds {
                for (name, value) in sigv4_headers(target.as_str(), region, id, secret, token)? {
                    request = request.header(name, value);
                }
            }
            match request.send().await {
                Ok(mut r) if r.status().is_success() => {
                    let mut body = Vec::new();
                    while let Some(chunk) = r.chunk().await.map_err(|e| {
                        Refusal::Unavailable(format!("reading `{url}`: {}", e.without_url()))
                    })? {
                        body.extend_from_slice(&chunk);
                        if body.len() > MAX_CERT_BYTES {
                            return Err(Refusal::Bad(format!("`{url}` is larger than 64 KiB")));
                        }
                    }
                    return Ok(body);
                }
                Ok(r)
                    if r.status().is_server_error()
                        || r.status().as_u16() == 429
                        || r.status().as_u16() == 408 =>
                {
                    last = format!("answered {}", r.status())
                }
                Ok(r) => {
                    return Err(Refusal::Bad(format!("`{url}` answered {}", r.status())));
                }
                Err(e) => last = e.without_url().to_string(),
            }
        }
        Err(Refusal::Unavailable(format!(
            "fetching `{url}` ({ATTEMPTS} tries): {last}"
        )))
    }
}

/// A message's `Timestamp` within `FRESH_FOR` of `now`.
fn fresh(timestamp: &str, now: std::time::SystemTime) -> Result<(), Refusal> {
    let at = humantime::parse_rfc3339_weak(timestamp)
        .map_err(|_| Refusal::Bad(format!("`Timestamp` `{timestamp}` is not an RFC 3339 time")))?;
    let off = match now.duration_since(at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if off > FRESH_FOR {
        return Err(Refusal::Bad(format!(
            "`Timestamp` `{timestamp}` is more than an hour from now: a replayed or forged message"
        )));
    }
    Ok(())
}

/// SigV4 headers for a GET of `url` to SNS in `region`.
fn sigv4_headers(
    url: &str,
    region: &str,
    id: &str,
    secret: &str,
    token: &Option<String>,
) -> Result<Vec<(String, String)>, Refusal> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity =
        aws_credential_types::Credentials::new(id, secret, token.clone(), None, "environment")
            .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sns")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Refusal::Unavailable(format!("signing a request to SNS: {e}")))?
        .into();
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| Refusal::Unavailable(format!("signing a request to SNS: {e}")))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| Refusal::Unavailable(format!("signing a request to SNS: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str) -> Envelope {
        Envelope {
            kind: kind.into(),
            message_id: "id-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:1:t".into(),
            message: "hello\nworld".into(),
            timestamp: "2026-11-27T15:00:00.000Z".into(),
            signature_version: "2".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subject: None,
            token: Some("tok".into()),
            subscribe_url: Some(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription".into(),
            ),
        }
    }

    #[test]
    fn the_signed_text_has_the_documented_fields_in_order() {
        let mut n = envelope("Notification");
        assert_eq!(
            n.string_to_sign().unwrap(),
            "Message\nhello\nworld\nMessageId\nid-1\nTimestamp\n2026-11-27T15:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nNotification\n"
        );
        n.subject = Some("ALARM".into());
        assert!(
            n.string_to_sign()
                .unwrap()
                .contains("MessageId\nid-1\nSubject\nALARM\nTimestamp")
        );
        let c = envelope("SubscriptionConfirmation");
        assert_eq!(
            c.string_to_sign().unwrap(),
            "Message\nhello\nworld\nMessageId\nid-1\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\nTimestamp\n2026-11-27T15:00:00.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:1:t\nType\nSubscriptionConfirmation\n"
        );
        let mut no_token = c.clone();
        no_token.token = None;
        assert!(matches!(no_token.string_to_sign(), Err(Refusal::Bad(_))));
        assert!(envelope("Other").string_to_sign().is_err());
    }

    #[test]
    fn only_messages_within_an_hour_are_taken() {
        let now = humantime::parse_rfc3339("2026-11-27T15:00:00Z").unwrap();
        assert!(fresh("2026-11-27T14:30:00.000Z", now).is_ok());
        assert!(fresh("2026-11-27T15:30:00.123Z", now).is_ok());
        for bad in [
            "2026-11-27T13:59:59.000Z",
            "2026-11-27T16:00:01.000Z",
            "yesterday",
            "",
        ] {
            assert!(fresh(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_sns_certificate_paths_are_fetched() {
        let path = |u: &str| is_certificate_path(&url::Url::parse(u).unwrap());
        assert!(path(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a64fc5e374ef4bd9.pem"
        ));
        for bad in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem?Action=Publish&Message=x",
            "https://sns.us-east-1.amazonaws.com/?Action=Publish&x=.pem",
            "https://sns.us-east-1.amazonaws.com/other.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a/b.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem#x",
        ] {
            assert!(!path(bad), "{bad}");
        }
    }

    #[test]
    fn only_https_sns_hosts_of_aws_serve_certificates() {
        let ok = aws_sns_url(
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
            "u",
        )
        .unwrap();
        assert_eq!(ok.1, "eu-west-1");
        assert!(aws_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem", "u").is_ok());
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://127.0.0.1/x.pem",
            "not a url",
        ] {
            assert!(aws_sns_url(bad, "u").is_err(), "{bad}");
        }
    }
}
