//! Connecting to NATS, and the JetStream streams and bucket the fleet
//! uses, created on first use and checked on every start: a worker refuses
//! a stream configured in a way that would break its guarantees.
//!
//! The client runs on a runtime of its own, so the synchronous
//! [`runbook_journal::store::Store`] calls can wait for it from anywhere (a run's
//! current-thread runtime, tokio's blocking pool) without blocking the
//! connection they wait on.

use crate::exclusive::Locking;
use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::{self, kv, stream};
use runbook_core::error::hinted;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The work queue: one message per requested run.
pub const REQUESTS: &str = "RUNBOOK_REQUESTS";
pub const REQUEST_SUBJECT: &str = "runbook.requests";
/// Run journals, one subject per run: `runbook.journal.RUN_ID`.
pub const JOURNAL: &str = "RUNBOOK_JOURNAL";
pub const JOURNAL_PREFIX: &str = "runbook.journal.";
/// Incidents, runs, leases, who runs what, parked runs, approvals.
pub const STATE: &str = "RUNBOOK_STATE";
/// The runs `runbook runs` lists: one message per run started, in the
/// order they started (a log, not a value every start rewrites).
pub const RUNS: &str = "RUNBOOK_RUNS";
pub const RUNS_SUBJECT: &str = "runbook.runs";
/// The most runs `RUNBOOK_RUNS` keeps.
pub const MAX_LISTED: i64 = 100_000;
/// Events for people and tools (a run parked, escalated).
pub const EVENT_PREFIX: &str = "runbook.events.";
/// One request per incident key within this window, whatever else
/// happens: an alarm that fires five times is one run.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);
pub use crate::timeouts::TIMEOUT;

/// The NATS URL: `--nats`, else `RUNBOOK_NATS_URL`.
pub fn url_of(flag: Option<&str>) -> Result<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("RUNBOOK_NATS_URL").ok())
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            hinted(
                "no NATS server named",
                "pass `--nats nats://HOST:4222` (several, comma-separated, for a cluster) or set `RUNBOOK_NATS_URL`",
            )
        })
}

/// A connection to the fleet's NATS, and the streams it uses.
pub struct Fleet {
    pub url: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub state: kv::Store,
    pub journal: stream::Stream,
    pub requests: stream::Stream,
    pub runs: stream::Stream,
    /// Whether revision-checked writes need the per-key lock (a clustered
    /// state stream; see `exclusive`).
    pub locking: Locking,
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Dropped inside a run's async code too, where a runtime may not
        // block to shut down.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Fleet {
    /// Connects (5 s per server), then creates or checks the streams.
    /// `replicas`: copies of each stream when this creates it (at most the
    /// cluster's size); existing streams keep theirs.
    pub fn connect(url: &str, replicas: Option<usize>) -> Result<Arc<Self>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats")
            .enable_all()
            .build()
            .context("starting the NATS client's runtime")?;
        let servers: Vec<String> = url
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let shown = url.to_string();
        let replicas = replicas.unwrap_or(1).max(1);
        let connected = wait_on(rt.handle(), "connecting to NATS", async move {
            let options = async_nats::ConnectOptions::new()
                .name(format!("runbook {}", env!("CARGO_PKG_VERSION")))
                .connection_timeout(Duration::from_secs(5))
                .request_timeout(Some(TIMEOUT))
                // About ten minutes of trying, then the client gives up.
                .max_reconnects(Some(300));
            let client = async_nats::connect_with_options(servers.as_slice(), options)
                .await
                .map_err(|e| {
                    hinted(
                        format!("cannot connect to NATS at `{shown}`: {e}"),
                        "is `nats-server -js` running there? check `--nats` / `RUNBOOK_NATS_URL`",
                    )
                })?;
            let js = jetstream::new(client.clone());
            let requests = ensure_stream(&js, requests_config(replicas)).await?;
            let journal = ensure_stream(&js, journal_config(replicas)).await?;
            let runs = ensure_stream(&js, runs_config(replicas)).await?;
            // The bucket's stream made here, as the client library would
            // (it asks the server for account details 2.9 does not give).
            let state_replicas = ensure_stream(&js, state_config(replicas))
                .await?
                .cached_info()
                .config
                .num_replicas;
            let state = js
                .get_key_value(STATE)
                .await
                .map_err(|e| jetstream_error(&format!("opening the bucket `{STATE}`"), e))?;
            Ok((client, js, state, journal, requests, runs, state_replicas))
        });
        let (client, js, state, journal, requests, runs, state_replicas) = match connected {
            Ok(c) => c,
            Err(e) => {
                // Not dropped here: this may be async code.
                rt.shutdown_background();
                return Err(e);
            }
        };
        let forced = std::env::var("RUNBOOK_NATS_REVISION_LOCK").ok();
        let locking = match Locking::choose(state_replicas, forced.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                rt.shutdown_background();
                return Err(e);
            }
        };
        tracing::debug!(state_replicas, ?locking, "revision-checked writes");
        Ok(Arc::new(Self {
            url: url.to_string(),
            locking,
            client,
            js,
            state,
            journal,
            requests,
            runs,
            rt: Some(rt),
        }))
    }

    /// Runs `fut` on the client's runtime and waits for it (from sync code
    /// anywhere, async contexts included), at most `TIMEOUT` and a bit.
    pub fn wait<T: Send + 'static>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        wait_on(self.handle(), what, fut)
    }

    /// Starts `fut` on the client's runtime (heartbeats).
    pub fn spawn(
        &self,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        self.handle().spawn(fut)
    }

    /// The JSON value at `key` (`Null` when absent) and its revision.
    /// Every listing in the fleet's state (parked runs, approvals) is such
    /// a value, kept by [`Fleet::change`], never a scan of the bucket's
    /// keys: listing keys needs a consumer, and on a 2.9 cluster that lost
    /// a node such consumers can stall for minutes, while a read of one
    /// key is answered by any replica. (The runs `runbook runs` lists are
    /// messages of their own stream, read by sequence: `store`.)
    pub fn read(&self, what: &str, key: &str) -> Result<(serde_json::Value, Option<u64>)> {
        let (kv, key, told) = (self.state.clone(), key.to_string(), what.to_string());
        self.wait(what, async move { read_key(&kv, &key, &told).await })
    }

    /// [`Fleet::read`], and the revision of the key's last message of any
    /// kind, for a write decided on this read ([`crate::exclusive::write_if`]).
    pub fn read_last(
        &self,
        what: &str,
        key: &str,
    ) -> Result<(serde_json::Value, Option<u64>, u64)> {
        let (kv, key, told) = (self.state.clone(), key.to_string(), what.to_string());
        self.wait(what, async move { read_key_last(&kv, &key, &told).await })
    }

    /// Changes the JSON value at `key` with `change` (given `Null` when
    /// absent; it returns `false` to leave the value as it is), written
    /// only if nobody wrote in between, else read and changed again; NATS
    /// not answering (a node lost, a leader being elected) is asked again,
    /// for up to 25 s in all. Returns whether this call wrote it.
    pub fn change(
        &self,
        what: &str,
        key: &str,
        change: impl FnMut(&mut serde_json::Value) -> bool + Send + 'static,
    ) -> Result<bool> {
        let (kv, key, told) = (self.state.clone(), key.to_string(), what.to_string());
        let until = std::time::Instant::now() + Duration::from_secs(25);
        let locking = self.locking;
        self.wait(what, async move {
            change_until(&kv, locking, &key, &told, change, until).await
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the fleet")
            .handle()
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

async fn change_until(
    kv: &kv::Store,
    locking: Locking,
    key: &str,
    told: &str,
    mut change: impl FnMut(&mut serde_json::Value) -> bool,
    until: std::time::Instant,
) -> Result<bool> {
    let mut last = String::new();
    for attempt in 0..1000u64 {
        if attempt > 0 {
            if std::time::Instant::now() > until {
                break;
            }
            // Others are writing too, or NATS is away: spread retries out.
            let jitter = runbook_core::time::now_ms() % 20;
            tokio::time::sleep(Duration::from_millis(5 * attempt.min(50) + jitter)).await;
        }
        let (mut value, revision, seen) = match read_key_last(kv, key, told).await {
            Ok(r) => r,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        if !change(&mut value) {
            return Ok(false);
        }
        let bytes = bytes::Bytes::from(value.to_string());
        let put = super::exclusive::Write::Put(bytes);
        match super::exclusive::write_if(kv, locking, key, put, revision, Some(seen)).await {
            Ok(Some(_)) => return Ok(true),
            Ok(None) => last = format!("`{key}` kept changing"),
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(anyhow!("{told}: {last}"))
}

/// `key`'s JSON value and revision, from the stream's leader (a replica
/// may lag behind what was just written).
pub(crate) async fn read_key(
    kv: &kv::Store,
    key: &str,
    what: &str,
) -> Result<(serde_json::Value, Option<u64>)> {
    let (value, revision, _) = read_key_last(kv, key, what).await?;
    Ok((value, revision))
}

/// [`read_key`], and the revision of the key's last message of any kind
/// (a deletion too; 0 if none): what a write decided on this read expects.
pub(crate) async fn read_key_last(
    kv: &kv::Store,
    key: &str,
    what: &str,
) -> Result<(serde_json::Value, Option<u64>, u64)> {
    let (value, last) = super::exclusive::leader_get(kv, key, TIMEOUT)
        .await
        .map_err(|e| anyhow!("{what}: {e:#}"))?;
    Ok(match value {
        Some((v, revision)) => (v, Some(revision), last),
        None => (serde_json::Value::Null, None, last),
    })
}

fn wait_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    what: &str,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    // Every call inside has its own timeout; this bounds the whole.
    match rx.recv_timeout(TIMEOUT * 3) {
        Ok(r) => r,
        Err(_) => {
            // Given up: cancelled, so nothing it was about to send goes out
            // after the caller was told it failed. (A request already sent
            // may still land; every write on the mutation path carries the
            // revision or sequence it expects, and the journal takes no
            // more lines after a failed one, so a late one changes nothing
            // this process relies on.)
            task.abort();
            Err(anyhow!(
                "{what}: no answer from NATS within {} s",
                (TIMEOUT * 3).as_secs()
            ))
        }
    }
}

pub fn jetstream_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    hinted(
        format!("{what}: {e}"),
        "is JetStream enabled on the server (`nats-server -js`), and a cluster's meta leader elected?",
    )
}

fn requests_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: REQUESTS.into(),
        description: Some("runbook run requests (work queue)".into()),
        subjects: vec![REQUEST_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

fn journal_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: JOURNAL.into(),
        description: Some("runbook run journals, one subject per run".into()),
        subjects: vec![format!("{JOURNAL_PREFIX}*")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Reads of a run's lines from any replica.
        allow_direct: true,
        ..Default::default()
    }
}

fn runs_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: RUNS.into(),
        description: Some("runbook runs started, newest last".into()),
        subjects: vec![RUNS_SUBJECT.into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Listed from any replica: a listing may lag a moment.
        allow_direct: true,
        // The newest runs are listed; older ones stay readable by id.
        max_messages: MAX_LISTED,
        // Longer than a listing is retried (`store::list_run`): a retry
        // of one that landed is not listed twice.
        duplicate_window: Duration::from_secs(900),
        ..Default::default()
    }
}

fn state_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{STATE}"),
        description: Some("runbook fleet: incidents, runs, leases, approvals".into()),
        subjects: vec![format!("$KV.{STATE}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Gets `want`'s stream, creating it if missing; refuses one whose
/// configuration breaks what the fleet relies on.
async fn ensure_stream(js: &jetstream::Context, want: stream::Config) -> Result<stream::Stream> {
    let name = want.name.clone();
    // "Not found" makes it; anything else (a cluster electing a leader
    // after losing a node) is asked again, and never answered by
    // creating a stream that exists.
    let mut last = String::new();
    let mut found = None;
    // Three tries within `connect`'s own bound.
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), js.get_stream(&name)).await {
            Ok(Ok(s)) => {
                found = Some(s);
                break;
            }
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return js
                    .create_stream(want)
                    .await
                    .map_err(|e| jetstream_error(&format!("creating the stream `{name}`"), e));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 5 s".into(),
        }
    }
    let Some(mut found) = found else {
        return Err(jetstream_error(
            &format!("reading the stream `{name}`"),
            last,
        ));
    };
    let info = found
        .info()
        .await
        .map_err(|e| jetstream_error(&format!("reading the stream `{name}`"), e))?;
    incompatible(&info.config, &want).map_or(Ok(found), Err)
}

/// Why `have` cannot serve as `want`, if it cannot.
pub fn incompatible(have: &stream::Config, want: &stream::Config) -> Option<anyhow::Error> {
    let mut why = Vec::new();
    if have.retention != want.retention {
        why.push(format!(
            "retention is `{:?}`, not `{:?}`",
            have.retention, want.retention
        ));
    }
    if have.subjects != want.subjects {
        why.push(format!(
            "subjects are `{}`, not `{}`",
            have.subjects.join(","),
            want.subjects.join(",")
        ));
    }
    if have.duplicate_window < want.duplicate_window {
        why.push(format!(
            "the duplicate window is {} s, shorter than {} s: repeated alarms would start repeated runs",
            have.duplicate_window.as_secs(),
            want.duplicate_window.as_secs()
        ));
    }
    if want.allow_direct && !have.allow_direct {
        why.push("direct get is off".into());
    }
    // Unset is 0 here and -1 from the server. Only the listing of runs
    // drops its oldest messages, and keeps at least as many as wanted.
    let drops_count = match want.max_messages {
        n if n > 0 => have.max_messages > 0 && have.max_messages < n,
        _ => have.max_messages > 0,
    };
    if have.max_age > want.max_age || drops_count || have.max_bytes > 0 {
        why.push(
            "it drops messages by age or count: requests or journal lines would be lost".into(),
        );
    }
    (!why.is_empty()).then(|| {
        hinted(
            format!(
                "the JetStream stream `{}` exists with a configuration runbook cannot use: {}",
                want.name,
                why.join("; ")
            ),
            format!(
                "it was made by something else, or an incompatible version: remove it (`nats stream rm {}`) or use another NATS account",
                want.name
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_would_lose_or_repeat_runs_is_refused() {
        let want = requests_config(1);
        assert!(incompatible(&want, &want).is_none());
        let mut limits = want.clone();
        limits.retention = stream::RetentionPolicy::Limits;
        limits.duplicate_window = Duration::from_secs(120);
        let why = incompatible(&limits, &want).unwrap().to_string();
        assert!(why.contains("retention is `Limits`"), "{why}");
        assert!(why.contains("repeated alarms"), "{why}");
        let mut aged = journal_config(3);
        aged.allow_direct = false;
        aged.max_age = Duration::from_secs(60);
        let why = incompatible(&aged, &journal_config(1)).unwrap().to_string();
        assert!(why.contains("direct get is off"), "{why}");
        assert!(why.contains("would be lost"), "{why}");
        // Replicas are the operator's to choose.
        assert!(incompatible(&journal_config(3), &journal_config(1)).is_none());
        // The listing of runs drops its oldest, and may keep more.
        assert!(incompatible(&runs_config(1), &runs_config(1)).is_none());
        let mut more = runs_config(1);
        more.max_messages = MAX_LISTED * 2;
        assert!(incompatible(&more, &runs_config(1)).is_none());
        let mut fewer = runs_config(1);
        fewer.max_messages = 10;
        let why = incompatible(&fewer, &runs_config(1)).unwrap().to_string();
        assert!(why.contains("would be lost"), "{why}");
        let mut capped = journal_config(1);
        capped.max_messages = MAX_LISTED;
        assert!(incompatible(&capped, &journal_config(1)).is_some());
    }
}
