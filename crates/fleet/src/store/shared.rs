//! The values every process of a fleet shares (the halts, the counted
//! changes), one key each in the fleet's state, changed only by a write
//! that expects the revision it read.

use super::*;

impl JetStreamStore {
    pub(super) fn shared_value(&self, name: Shared) -> Result<Value> {
        Ok(self
            .entry(&shared_key(name))?
            .map(|(v, _)| v)
            .unwrap_or(Value::Null))
    }

    pub(super) fn change_shared_value(
        &self,
        name: Shared,
        change: &mut (dyn FnMut(&mut Value) -> bool + Send),
    ) -> Result<bool> {
        let key = shared_key(name);
        let until = Instant::now() + SHARED_FOR;
        let mut last = String::new();
        // Bounded by time and by count: each pass reads the value as the
        // leader has it, changes it, and writes it only if it is still the
        // revision read (another process's write makes it go round again).
        for attempt in 0..SHARED_TRIES {
            if attempt > 0 {
                if Instant::now() > until {
                    break;
                }
                let jitter = runbook_core::time::now_ms() % 7;
                std::thread::sleep(Duration::from_millis(2 * attempt.min(25) + jitter));
            }
            let (current, seen) = match self.entry_last(&key) {
                Ok(c) => c,
                Err(e) => {
                    last = format!("{e:#}");
                    continue;
                }
            };
            let (mut value, revision) = match current {
                Some((v, r)) => (v, Some(r)),
                None => (Value::Null, None),
            };
            if !change(&mut value) {
                return Ok(false);
            }
            match put_if(&self.fleet, &key, &value, revision, seen) {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => last = format!("`{key}` kept changing"),
                Err(e) => last = format!("{e:#}"),
            }
        }
        Err(anyhow!("changing the fleet's `{key}`: {last}"))
    }
}

/// How long, and how many times, a shared value is tried.
const SHARED_FOR: Duration = Duration::from_secs(25);
const SHARED_TRIES: u64 = 2000;

fn shared_key(name: Shared) -> String {
    format!("shared.{}", name.key())
}
