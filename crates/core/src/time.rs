//! Time as the host keeps it: unix milliseconds, shown as RFC 3339. Its own
//! module because scenarios, reports, the audit log and the journal all
//! need it and none of them should depend on another for it.

use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The latest instant a runbook file may name: the end of year 9999.
/// Anything later is a typo, and arithmetic on it could overflow.
pub const MAX_MS: u64 = 253_402_300_799_999;

/// An RFC 3339 instant, kept as unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let t = humantime::parse_rfc3339(raw).map_err(|e| {
            format!("`{raw}` is not an RFC 3339 time like `2026-11-26T03:00:00Z`: {e}")
        })?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("`{raw}` is before 1970"))?
            .as_millis();
        u64::try_from(ms)
            .ok()
            .filter(|ms| *ms <= MAX_MS)
            .map(Timestamp)
            .ok_or_else(|| format!("`{raw}` is after the year 9999"))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Timestamp::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Formats unix milliseconds as RFC 3339 (UTC, seconds). Instants past
/// [`MAX_MS`] are shown as that.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_MS)))
        .to_string()
}

/// The same, with milliseconds.
pub fn rfc3339_millis(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_MS))).to_string()
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_range_checked() {
        assert_eq!(
            Timestamp::parse("2026-11-26T03:00:00Z").unwrap().0,
            1_795_662_000_000
        );
        assert!(Timestamp::parse("9999-12-31T23:59:59Z").is_ok());
        assert!(Timestamp::parse("1969-12-31T23:59:59Z").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }
}
