//! One run's journal as a JetStream subject: each message appended only
//! after the message this process last saw
//! (`Nats-Expected-Last-Subject-Sequence`), so a process that lost the run
//! cannot add one.
//!
//! Group commit ([`runbook_journal::log::durable`]): a line that may wait
//! is kept in memory and published with the next durable line, in one
//! message (one publish, one acknowledgement). A message of one line is
//! that line, as it always was; a message of several starts with a
//! `{"runbook_batch":N}` line and then its N chained lines, one per line.
//! [`message_lines`] reads both. The first line is what keeps an older
//! `runbook`, which reads a message as one line, from misreading a batch:
//! its chain check fails on it, so it refuses the journal as altered
//! rather than resume a run with lines it cannot see. (Upgrade a fleet's
//! workers together all the same.)

use super::*;

/// A batch larger than this goes out in several messages (in order, each
/// after the one before): well under the server's default 1 MiB payload
/// limit. A longer line goes alone.
const MAX_BATCH: usize = 512 * 1024;
/// The key of a batch's first line.
const BATCH: &str = "runbook_batch";

/// A run's journal lines on its subject.
pub(super) struct StreamLog {
    pub(super) fleet: Arc<Fleet>,
    pub(super) subject: String,
    pub(super) at: Mutex<At>,
    pub(super) lost: Arc<AtomicBool>,
}

/// Where a [`StreamLog`] stands.
pub(super) struct At {
    /// The chain's head, lines waiting included.
    pub(super) head: Option<Head>,
    /// The stream sequence of the last message stored.
    pub(super) sequence: u64,
    /// Lines sealed and not yet published, oldest first, with their seq.
    pub(super) waiting: Vec<(String, u64)>,
}

impl JournalLog for StreamLog {
    fn append(&self, fields: Value, durable: bool) -> Result<u64> {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        if self.lost.load(Ordering::SeqCst) {
            return Err(anyhow!(
                "this process no longer holds the run (another process took it over)"
            ));
        }
        let (line, head) = runbook_journal::chain::seal(at.head.as_ref(), fields);
        let line = line.trim_end().to_string();
        if !durable {
            at.waiting.push((line, head.seq));
            at.head = Some(head.clone());
            return Ok(head.seq);
        }
        let mut batch = std::mem::take(&mut at.waiting);
        batch.push((line, head.seq));
        for message in messages(batch) {
            at.sequence = self.publish(message, at.sequence)?;
        }
        at.head = Some(head.clone());
        Ok(head.seq)
    }

    fn location(&self) -> String {
        format!("nats `{}`: `{}`", self.fleet.url, self.subject)
    }
}

impl StreamLog {
    /// Publishes `batch` (lines and their seq) as one message after stream
    /// sequence `after`; returns the message's sequence.
    fn publish(&self, batch: Vec<(String, u64)>, after: u64) -> Result<u64> {
        injected("nats-append")?;
        let last = batch.last().map_or(0, |(_, seq)| *seq);
        let (js, subject) = (self.fleet.js.clone(), self.subject.clone());
        // The same id on a retry: a message that did arrive is not added
        // twice (the seq of its last line names it).
        let id = format!("{}:{last}", self.subject);
        let mut text: Vec<String> = batch.into_iter().map(|(l, _)| l).collect();
        if text.len() > 1 {
            text.insert(0, format!("{{\"{BATCH}\":{}}}", text.len()));
        }
        let payload = bytes::Bytes::from(text.join("\n"));
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
                // The message landed and its answer was lost (a timeout
                // after the server stored it): the writer must stop all
                // the same.
                injected("nats-appended")?;
                Ok(s)
            }
            Err(e) => {
                if e.to_string().contains("holds the run now") {
                    self.lost.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }
}

/// `batch` cut into messages of at most [`MAX_BATCH`] bytes, in order.
fn messages(batch: Vec<(String, u64)>) -> Vec<Vec<(String, u64)>> {
    let mut out: Vec<Vec<(String, u64)>> = Vec::new();
    let mut size = 0;
    for (line, seq) in batch {
        let len = line.len() + 1;
        match out.last_mut() {
            Some(last) if size + len <= MAX_BATCH => {
                last.push((line, seq));
                size += len;
            }
            _ => {
                out.push(vec![(line, seq)]);
                size = len;
            }
        }
    }
    out
}

/// The journal lines of one message: the message itself, or the lines of
/// a batch after its `{"runbook_batch":N}` line. Anything else (a batch
/// line whose count is wrong, lines without one) is returned as it is,
/// for the chain check to refuse.
pub fn message_lines(payload: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(payload);
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if lines.len() > 1
        && let Ok(Value::Object(first)) = serde_json::from_str::<Value>(&lines[0])
        && first.len() == 1
        && first.get(BATCH).and_then(Value::as_u64) == Some(lines.len() as u64 - 1)
    {
        return lines[1..].to_vec();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_or_a_counted_batch() {
        assert_eq!(message_lines(br#"{"seq":1}"#), [r#"{"seq":1}"#]);
        let batch = b"{\"runbook_batch\":2}\n{\"seq\":2}\n{\"seq\":3}";
        assert_eq!(message_lines(batch), [r#"{"seq":2}"#, r#"{"seq":3}"#]);
        // A wrong count, or no count: all of it, for the chain to judge.
        let wrong = b"{\"runbook_batch\":3}\n{\"seq\":2}\n{\"seq\":3}";
        assert_eq!(message_lines(wrong).len(), 3);
        assert_eq!(message_lines(b"{\"seq\":2}\n{\"seq\":3}").len(), 2);
    }

    #[test]
    fn a_batch_is_cut_into_messages_under_the_limit_in_order() {
        let big = "x".repeat(MAX_BATCH / 2);
        let batch = vec![
            ("a".to_string(), 1),
            (big.clone(), 2),
            (big.clone(), 3),
            ("x".repeat(MAX_BATCH + 1), 4),
            ("b".to_string(), 5),
        ];
        let cut = messages(batch);
        let seqs: Vec<Vec<u64>> = cut
            .iter()
            .map(|m| m.iter().map(|(_, s)| *s).collect())
            .collect();
        assert_eq!(seqs, [vec![1, 2], vec![3], vec![4], vec![5]]);
    }
}
