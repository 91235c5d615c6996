//! A run request: what `runbook submit`, `runbook approve` and alarm
//! intake publish to the work queue, and a worker executes.
//!
//! A request names files by absolute path and digest, not by content:
//! workers run from the same checkout of the runbooks (a deployment, a
//! shared volume), and refuse a file that is not the one submitted.

use super::nats::{Fleet, REQUEST_SUBJECT, TIMEOUT};
use anyhow::{Context, Result, anyhow};
use runbook_core::error::hinted;
use runbook_core::trace::TraceOrigin;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(
    clippy::large_enum_variant,
    reason = "one request per queue message, parsed once: its size does not matter"
)]
pub enum Request {
    /// Run a runbook for an incident (or continue the incident's run).
    Run(RunRequest),
    /// Continue a parked run: someone approved `step`.
    Resume {
        run_id: String,
        step: String,
        by: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub runbook: PathBuf,
    pub runbook_sha256: String,
    /// `--sim SCENARIO` or `--env FILE`, one of them.
    pub sim: Option<PathBuf>,
    pub env: Option<PathBuf>,
    pub backend_sha256: String,
    /// The sha256 of `runbook.lock` beside the runbook, when there is one:
    /// the worker refuses a request whose lock is not the one it has, and
    /// runs it `--locked` (every plugin as the lock pins it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_sha256: Option<String>,
    /// The incident key: one run per incident, whoever asks how often.
    pub incident: String,
    pub incident_start: Option<String>,
    /// Approvals given up front (`--yes`, `--approve STEP`).
    pub yes: bool,
    pub approve: Vec<String>,
    /// How long a parked run waits for an approval before it escalates
    /// (the worker's default when absent).
    pub approval_timeout_s: Option<u64>,
    /// The incident's severity, for the organisation's policies
    /// (`context.incident.severity`); absent, left out of the body (a
    /// worker of an earlier version refuses fields it does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub submitted_by: String,
    pub submitted_ms: u64,
    /// The submitter's trace and what started the run (an alert's
    /// identity), for the run's OpenTelemetry span. Sent as the message's
    /// `Runbook-Trace` header ([`TRACE_HEADER`]), not in the body: a worker
    /// of an earlier version refuses a body with a field it does not know
    /// (and drops the request), and ignores a header.
    #[serde(skip)]
    pub trace: TraceOrigin,
}

fn digest_of(path: &Path, what: &str) -> Result<String> {
    let bytes = runbook_core::files::read_bytes(path, what, runbook_core::files::MAX_TEXT)?;
    Ok(runbook_core::hash::sha256_hex(&bytes))
}

impl RunRequest {
    /// A request for `runbook` against `sim` or `env`, checked as far as
    /// this machine can: both files read, the runbook parses.
    pub fn new(
        runbook: &Path,
        sim: Option<&Path>,
        env: Option<&Path>,
        incident: Option<String>,
    ) -> Result<Self> {
        let parsed = runbook_core::runbook::Runbook::load(runbook)?;
        let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let backend = match (sim, env) {
            (Some(p), None) | (None, Some(p)) => p,
            _ => {
                return Err(hinted(
                    "a run request needs one backend",
                    "pass `--env FILE` (live) or `--sim SCENARIO`",
                ));
            }
        };
        let backend_sha256 = digest_of(backend, "backend file")?;
        let incident = match incident {
            Some(i) => i,
            // A rehearsal is an incident of its own.
            None if sim.is_some() => format!("simulation:{}", runbook_engine::start::run_id()),
            None => runbook_journal::replay::default_incident(
                &parsed.runbook_id,
                &backend.file_stem().unwrap_or_default().to_string_lossy(),
                None,
            ),
        };
        let lock = runbook
            .parent()
            .unwrap_or(Path::new("."))
            .join(runbook_core::lock::FILE_NAME);
        let lock_sha256 = match lock.is_file() {
            true => Some(digest_of(&lock, "lock")?),
            false => None,
        };
        Ok(Self {
            lock_sha256,
            runbook_sha256: digest_of(runbook, "runbook")?,
            runbook: absolute(runbook),
            sim: sim.map(absolute),
            env: env.map(absolute),
            backend_sha256,
            incident,
            incident_start: None,
            yes: false,
            approve: Vec::new(),
            approval_timeout_s: None,
            severity: None,
            submitted_by: runbook_core::whoami::who(),
            submitted_ms: runbook_core::time::now_ms(),
            trace: TraceOrigin::default(),
        })
    }

    /// Refuses files that changed since the request was made.
    pub fn check_files(&self) -> Result<()> {
        let backend = self
            .sim
            .as_deref()
            .or(self.env.as_deref())
            .ok_or_else(|| anyhow!("the request names no backend"))?;
        for (path, want, what) in [
            (self.runbook.as_path(), &self.runbook_sha256, "runbook"),
            (backend, &self.backend_sha256, "backend file"),
        ] {
            let have = digest_of(path, what)
                .with_context(|| format!("this worker cannot read the request's {what}"))?;
            if have != *want {
                return Err(mismatch(what, path, &have, want));
            }
        }
        if let Some(want) = &self.lock_sha256 {
            let path = self.lock_path();
            let have = digest_of(&path, "lock").with_context(
                || "this worker has no `runbook.lock` where the request's runbook has one",
            )?;
            if have != *want {
                return Err(mismatch("lock", &path, &have, want));
            }
        }
        Ok(())
    }

    /// `runbook.lock` beside the request's runbook.
    pub fn lock_path(&self) -> PathBuf {
        self.runbook
            .parent()
            .unwrap_or(Path::new("."))
            .join(runbook_core::lock::FILE_NAME)
    }
}

/// A file on this worker that is not the one submitted.
fn mismatch(what: &str, path: &Path, have: &str, want: &str) -> anyhow::Error {
    hinted(
        format!(
            "the {what} `{}` on this worker is not the one submitted (sha256 {} here, {} submitted)",
            path.display(),
            short(have),
            short(want)
        ),
        "deploy the same runbooks to every worker, then submit again",
    )
}

/// The start of a digest, for people: by characters, so a request's
/// digest that is not hex (foreign input) never splits a character.
fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

/// What publishing a request did.
#[derive(Debug)]
pub struct Published {
    pub sequence: u64,
    /// The same key was published within the duplicate window: this one
    /// was dropped.
    pub duplicate: bool,
}

/// Publishes `request` with `key` as its message id: within the stream's
/// duplicate window the same key is stored once.
/// The header a run request's [`TraceOrigin`] travels in, as JSON.
pub const TRACE_HEADER: &str = "Runbook-Trace";

/// The trace origin a request message's header carries; none when it has
/// none, or one that cannot be read (said in the log: a run is never
/// refused for its trace).
pub fn trace_of(headers: Option<&async_nats::HeaderMap>) -> TraceOrigin {
    let Some(text) = headers.and_then(|h| h.get(TRACE_HEADER)) else {
        return TraceOrigin::default();
    };
    match serde_json::from_str::<TraceOrigin>(text.as_str()) {
        Ok(t) => t.bounded(),
        Err(e) => {
            tracing::warn!("ignoring a request's `{TRACE_HEADER}` header: {e}");
            TraceOrigin::default()
        }
    }
}

pub fn publish(fleet: &Fleet, request: &Request, key: &str) -> Result<Published> {
    let payload = bytes::Bytes::from(serde_json::to_vec(request)?);
    // JSON escapes line breaks: always a valid header value.
    let trace = match request {
        Request::Run(r) if !r.trace.is_empty() => Some(
            serde_json::to_string(&r.trace)?
                .parse::<async_nats::HeaderValue>()
                .map_err(|e| anyhow!("the request's trace as a header: {e}"))?,
        ),
        _ => None,
    };
    let (js, key) = (fleet.js.clone(), key.to_string());
    fleet.wait("publishing a run request", async move {
        let mut last = String::new();
        // The same message id on a retry: stored once either way.
        for _ in 0..3 {
            let mut publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(&key);
            if let Some(t) = &trace {
                publish = publish.header(TRACE_HEADER, t.clone());
            }
            let sent = async { js.send_publish(REQUEST_SUBJECT, publish).await?.await };
            match tokio::time::timeout(TIMEOUT, sent).await {
                Ok(Ok(ack)) => {
                    return Ok(Published {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        Err(anyhow!("publishing to `{REQUEST_SUBJECT}`: {last}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requests_trace_travels_in_a_header_that_earlier_workers_ignore() {
        let mut r = RunRequest::new(
            Path::new("../../runbooks/RB-0031-auth-service-degradation.md"),
            Some(Path::new("../../runbooks/scenarios/bad-deploy.toml")),
            None,
            Some("i-1".into()),
        )
        .unwrap();
        r.trace = TraceOrigin::default().with("alert.name", "Slow");
        // Not in the body: a body with a field an earlier worker does not
        // know is refused (and dropped) by it.
        let body = serde_json::to_string(&Request::Run(r.clone())).unwrap();
        assert!(!body.contains("trace") && !body.contains("Slow"), "{body}");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            TRACE_HEADER,
            serde_json::to_string(&r.trace).unwrap().as_str(),
        );
        assert_eq!(trace_of(Some(&headers)), r.trace);
        assert_eq!(trace_of(None), TraceOrigin::default());
        let mut bad = async_nats::HeaderMap::new();
        bad.insert(TRACE_HEADER, "{\"parent\":\"00-zz\"}");
        assert_eq!(trace_of(Some(&bad)), TraceOrigin::default());
    }

    #[test]
    fn a_request_reads_back_and_unknown_fields_are_refused() {
        let r = Request::Resume {
            run_id: "ab12".into(),
            step: "rollback".into(),
            by: "alice".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        let extra = text.replace("\"by\"", "\"shell\":\"rm -rf /\",\"by\"");
        assert!(serde_json::from_str::<Request>(&extra).is_err());
    }

    /// A digest with a multi-byte character where the message cuts it, a
    /// lock that differs: refused with the reason, never a panic.
    #[test]
    fn foreign_digests_and_a_different_lock_are_refused_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let runbook = dir.path().join("rb.md");
        std::fs::write(&runbook, "x").unwrap();
        let env = dir.path().join("env.toml");
        std::fs::write(&env, "").unwrap();
        std::fs::write(dir.path().join("runbook.lock"), "lock v1").unwrap();
        let request = |runbook_sha256: &str, lock: &str| RunRequest {
            runbook: runbook.clone(),
            runbook_sha256: runbook_sha256.into(),
            sim: None,
            env: Some(env.clone()),
            backend_sha256: runbook_core::hash::sha256_hex(b""),
            lock_sha256: Some(lock.into()),
            incident: "i".into(),
            incident_start: None,
            yes: false,
            approve: Vec::new(),
            approval_timeout_s: None,
            severity: None,
            submitted_by: "t".into(),
            submitted_ms: 0,
            trace: TraceOrigin::default(),
        };
        let lock = runbook_core::hash::sha256_hex(b"lock v1");
        let err = request("0123456789aé€xyz", &lock)
            .check_files()
            .unwrap_err();
        assert!(err.to_string().contains("0123456789aé submitted"), "{err}");
        let ok = runbook_core::hash::sha256_hex(b"x");
        request(&ok, &lock).check_files().unwrap();
        let err = request(&ok, &runbook_core::hash::sha256_hex(b"lock v0"))
            .check_files()
            .unwrap_err();
        assert!(err.to_string().contains("the lock `"), "{err}");
    }
}
