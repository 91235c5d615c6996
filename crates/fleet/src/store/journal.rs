//! One run's journal as a JetStream subject: each line appended only after
//! the line this process last saw (`Nats-Expected-Last-Subject-Sequence`),
//! so a process that lost the run cannot add one.

use super::*;

/// A run's journal lines on its subject.
pub(super) struct StreamLog {
    pub(super) fleet: Arc<Fleet>,
    pub(super) subject: String,
    /// The chain's head and the stream sequence of its last line.
    pub(super) at: Mutex<(Option<Head>, u64)>,
    pub(super) lost: Arc<AtomicBool>,
}

impl JournalLog for StreamLog {
    fn append(&self, fields: Value) -> Result<u64> {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if self.lost.load(Ordering::SeqCst) {
            return Err(anyhow!(
                "this process no longer holds the run (another process took it over)"
            ));
        }
        let (line, head) = runbook_journal::chain::seal(at.0.as_ref(), fields);
        injected("nats-append")?;
        let (js, subject, after) = (self.fleet.js.clone(), self.subject.clone(), at.1);
        // The same id on a retry: a line that did arrive is not added twice.
        let id = format!("{}:{}", self.subject, head.seq);
        let payload = bytes::Bytes::from(line.trim_end().to_string());
        let sequence = self.fleet.wait("appending to a run's journal", async move {
            let mut last = None;
            // A stream just made, or whose leader moved, answers nothing
            // for a few seconds: try again, about 12 s in all.
            for attempt in 0..8u64 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
                }
                let publish = async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(&id)
                    .expected_last_subject_sequence(after);
                let sent = async {
                    js.send_publish(subject.clone(), publish).await?.await
                };
                match tokio::time::timeout(TIMEOUT, sent).await {
                    Ok(Ok(ack)) => return Ok(ack.sequence),
                    Ok(Err(e))
                        if e.kind()
                            == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
                    {
                        return Err(anyhow!(
                            "another process wrote to this run's journal (`{subject}`): it holds the run now"
                        ));
                    }
                    Ok(Err(e)) => last = Some(e.to_string()),
                    Err(_) => last = Some("timed out".into()),
                }
            }
            Err(anyhow!(
                "appending to `{subject}`: {}",
                last.unwrap_or_default()
            ))
        });
        match sequence {
            Ok(s) => {
                *at = (Some(head.clone()), s);
                // The line landed and its answer was lost (a timeout after
                // the server stored it): the writer must stop all the same.
                injected("nats-appended")?;
                Ok(head.seq)
            }
            Err(e) => {
                if e.to_string().contains("holds the run now") {
                    self.lost.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }

    fn location(&self) -> String {
        format!("nats `{}`: `{}`", self.fleet.url, self.subject)
    }
}
