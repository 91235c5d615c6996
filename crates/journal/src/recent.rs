//! Changes counted for rate limits: when each change of a resource and
//! of a runbook was set out, in every run that shares the store, over a
//! sliding hour and day. Policies read the counts (`context.recent`); a
//! change is counted in the same atomic write that decides, on those
//! counts, that it may go ahead ([`count`]), so runs on several machines
//! cannot both take the last one.
//!
//! A change is counted when it is set out (after its budget and lease,
//! right before its intent is journaled), whether or not its backend then
//! takes it: a limit counts attempts, never fewer than were made.
//! Simulated runs are counted apart from live ones (a value of their
//! own): a rehearsal never uses up production's limit. A dry run counts
//! nothing and reads the counts of the runs it stands for.
//!
//! The value stays small: at most [`MAX_KEPT`] times per resource or
//! runbook (counts stop there), and when it grows past [`MAX_BYTES`] the
//! resources and runbooks changed longest ago go first.

use crate::store::{Shared, Store};
use anyhow::Result;
pub use runbook_core::recent::{Recent, Window};
use serde_json::{Value, json};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Most times kept per resource and per runbook: counts stop growing
/// there (a limit above it cannot be written).
pub const MAX_KEPT: usize = 1_000;
/// Past this, the least recently changed resources and runbooks are
/// dropped (well under NATS's default 1 MiB message).
pub const MAX_BYTES: usize = 256 * 1024;

/// One change about to be set out.
#[derive(Debug, Clone)]
pub struct Counted {
    /// `live`, `simulation`: counted apart.
    pub mode: String,
    /// The capability's interface and the resource's name:
    /// `ecs:production/auth-service`.
    pub resource: String,
    pub runbook: String,
    pub at_ms: u64,
}

fn keys(c: &Counted) -> [(&'static str, String); 2] {
    [
        ("resources", format!("{}:{}", c.mode, c.resource)),
        ("runbooks", format!("{}:{}", c.mode, c.runbook)),
    ]
}

fn window(times: Option<&Value>, now: u64) -> Window {
    let mut w = Window::default();
    for t in times.and_then(Value::as_array).into_iter().flatten() {
        let Some(t) = t.as_u64() else { continue };
        let age = now.saturating_sub(t);
        if t <= now.saturating_add(HOUR_MS) && age < DAY_MS {
            w.day += 1;
            if age < HOUR_MS {
                w.hour += 1;
            }
        }
    }
    w
}

/// The counts for `c` in `ledger` (the shared value).
pub fn recent(ledger: &Value, c: &Counted) -> Recent {
    let [(r, rk), (b, bk)] = keys(c);
    Recent {
        resource: window(ledger[r].get(&rk), c.at_ms),
        runbook: window(ledger[b].get(&bk), c.at_ms),
    }
}

/// Adds `c` to `ledger`, dropping what is older than a day.
pub fn record(ledger: &mut Value, c: &Counted) {
    if !ledger.is_object() {
        *ledger = json!({ "resources": {}, "runbooks": {} });
    }
    for (map, key) in keys(c) {
        if !ledger[map].is_object() {
            ledger[map] = json!({});
        }
        let times = &mut ledger[map][&key];
        if !times.is_array() {
            *times = json!([]);
        }
        if let Some(list) = times.as_array_mut() {
            list.push(c.at_ms.into());
            list.retain(|t| {
                t.as_u64()
                    .is_some_and(|t| c.at_ms.saturating_sub(t) < DAY_MS)
            });
            let over = list.len().saturating_sub(MAX_KEPT);
            list.drain(..over);
        }
        // Resources nobody changed for a day go.
        if let Some(all) = ledger[map].as_object_mut() {
            all.retain(|_, v| {
                v.as_array().is_some_and(|l| {
                    l.last()
                        .and_then(Value::as_u64)
                        .is_some_and(|t| c.at_ms.saturating_sub(t) < DAY_MS)
                })
            });
        }
    }
    // Bounded: the least recently changed go first (never the two just
    // counted, which are the most recent). Sizes are reckoned, not
    // serialized: a time is at most 14 bytes, a key its length and 6.
    let mut lists: Vec<(u64, &'static str, String, usize)> = ["resources", "runbooks"]
        .iter()
        .flat_map(|m| {
            ledger[*m]
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(k, v)| {
                    let times = v.as_array().map_or(&[][..], Vec::as_slice);
                    let last = times.last().and_then(Value::as_u64).unwrap_or(0);
                    (last, *m, k.clone(), k.len() + 6 + 14 * times.len())
                })
        })
        .collect();
    let mut size: usize = 64 + lists.iter().map(|l| l.3).sum::<usize>();
    if size > MAX_BYTES {
        lists.sort();
        for (_, map, key, bytes) in lists {
            if size <= MAX_BYTES {
                break;
            }
            if let Some(all) = ledger[map].as_object_mut() {
                all.remove(&key);
            }
            size -= bytes;
        }
    }
}

/// Where `c`'s mode is counted.
fn shared(c: &Counted) -> Shared {
    match c.mode.as_str() {
        "live" => Shared::Changes,
        _ => Shared::SimulatedChanges,
    }
}

/// The counts for `c` as the store has them now.
pub fn read(store: &dyn Store, c: &Counted) -> Result<Recent> {
    Ok(recent(&store.read_shared(shared(c))?, c))
}

/// Asks `allow` with the counts for `c` and, if it allows, counts `c`, in
/// one write no other process can come between (written again if one
/// did). Returns the counts `allow` was last asked with and its answer.
pub fn count(
    store: &dyn Store,
    c: &Counted,
    allow: &mut (dyn FnMut(&Recent) -> bool + Send),
) -> Result<(Recent, bool)> {
    let mut last = None;
    let wrote = store.change_shared(shared(c), &mut |ledger| {
        let counts = recent(ledger, c);
        let yes = allow(&counts);
        last = Some(counts);
        if yes {
            record(ledger, c);
        }
        yes
    })?;
    let counts = last.ok_or_else(|| anyhow::anyhow!("the counted changes were not read"))?;
    Ok((counts, wrote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: u64) -> Counted {
        Counted {
            mode: "live".into(),
            resource: "ecs:production/auth-service".into(),
            runbook: "RB-0031".into(),
            at_ms: t,
        }
    }

    #[test]
    fn counts_slide_with_the_hour_and_the_day_and_modes_are_apart() {
        let mut l = Value::Null;
        let t0 = 10 * DAY_MS;
        record(&mut l, &at(t0));
        record(&mut l, &at(t0 + HOUR_MS / 2));
        let r = recent(&l, &at(t0 + HOUR_MS / 2 + 1));
        assert_eq!(r.resource, Window { hour: 2, day: 2 });
        assert_eq!(r.runbook, Window { hour: 2, day: 2 });
        let r = recent(&l, &at(t0 + HOUR_MS + 1));
        assert_eq!(r.resource, Window { hour: 1, day: 2 });
        let r = recent(&l, &at(t0 + DAY_MS + HOUR_MS));
        assert_eq!(r.resource, Window { hour: 0, day: 0 });
        let mut other = at(t0 + 1);
        other.resource = "ecs:staging/auth-service".into();
        assert_eq!(recent(&l, &other).resource.hour, 0);
        assert_eq!(recent(&l, &other).runbook.hour, 2);
        other.mode = "simulation".into();
        assert_eq!(recent(&l, &other), Recent::default());
        // A day later the old times are gone from the value itself.
        record(&mut l, &at(t0 + 2 * DAY_MS));
        assert_eq!(
            l["resources"]["live:ecs:production/auth-service"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_value_stays_small_and_keeps_what_was_changed_last() {
        let mut l = Value::Null;
        let name = "x".repeat(200);
        for i in 0..2000u64 {
            let mut c = at(DAY_MS + i);
            c.resource = format!("ecs:{name}-{i}");
            record(&mut l, &c);
        }
        assert!(l.to_string().len() <= MAX_BYTES, "{}", l.to_string().len());
        let mut last = at(DAY_MS + 1999);
        last.resource = format!("ecs:{name}-1999");
        assert_eq!(recent(&l, &last).resource.hour, 1);
        // The runbook's own count is one of the most recent: kept, capped.
        assert_eq!(recent(&l, &last).runbook.hour, MAX_KEPT as u64);
    }
}
