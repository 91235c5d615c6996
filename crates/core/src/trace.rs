//! Where a run's trace comes from, as plain data: a W3C trace context
//! `traceparent` (an HTTP header, the `TRACEPARENT` variable) and what
//! started the run (an alert's identity). The engine turns these into
//! OpenTelemetry spans (`runbook_engine::telemetry`); nothing here knows
//! OpenTelemetry, so a fleet request can carry them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A W3C trace context `traceparent`
/// (<https://www.w3.org/TR/trace-context/#traceparent-header>):
/// `00-TRACE_ID-PARENT_ID-FLAGS`, lower-case hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller records this trace (flag `01`).
    pub sampled: bool,
}

impl TraceParent {
    /// The trace id as 32 lower-case hex digits (how reports show it).
    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        hex(&self.span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `digits` lower-case hex digits (upper case is invalid in a
/// `traceparent`), as bytes.
fn unhex<const N: usize>(digits: &str) -> Option<[u8; N]> {
    if digits.len() != N * 2
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl FromStr for TraceParent {
    type Err = String;

    /// Version `00` exactly; a later version is read for its first four
    /// fields, as the specification asks. All-zero ids and version `ff`
    /// are invalid.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "not a W3C `traceparent` ({why}); expected `00-` then 32 and 16 lower-case hex digits and the flags, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`"
            ))
        };
        if s.len() > 512 {
            return bad("longer than 512 characters");
        }
        let parts: Vec<&str> = s.trim().splitn(5, '-').collect();
        if parts.len() < 4 {
            return bad("fewer than four fields");
        }
        let Some([version]) = unhex::<1>(parts[0]) else {
            return bad("its version is not two hex digits");
        };
        if version == 0xff {
            return bad("version `ff` is invalid");
        }
        if version == 0 && parts.len() != 4 {
            return bad("version `00` has exactly four fields");
        }
        let Some(trace_id) = unhex::<16>(parts[1]).filter(|t| t != &[0; 16]) else {
            return bad("its trace id is not 32 lower-case hex digits, or is all zeros");
        };
        let Some(span_id) = unhex::<8>(parts[2]).filter(|s| s != &[0; 8]) else {
            return bad("its parent id is not 16 lower-case hex digits, or is all zeros");
        };
        let Some([flags]) = unhex::<1>(parts[3]) else {
            return bad("its flags are not two hex digits");
        };
        Ok(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_hex(),
            self.span_hex(),
            u8::from(self.sampled)
        )
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The most attributes an origin carries, and the longest name or value
/// kept: an origin comes from outside (an alert's labels).
pub const MAX_ATTRIBUTES: usize = 32;
pub const MAX_ATTRIBUTE_LEN: usize = 256;

/// Where a run's trace comes from: the caller's span, if one was passed
/// on, and what started the run (`alert.name`, `alert.fingerprint`, ...),
/// set on the run's span. Never secrets: these are exported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceOrigin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<TraceParent>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl TraceOrigin {
    pub fn is_empty(&self) -> bool {
        self.parent.is_none() && self.attributes.is_empty()
    }

    /// The same, within [`MAX_ATTRIBUTES`] and [`MAX_ATTRIBUTE_LEN`] (one
    /// read from outside, e.g. a request's header).
    pub fn bounded(self) -> Self {
        let mut out = TraceOrigin {
            parent: self.parent,
            ..TraceOrigin::default()
        };
        for (k, v) in &self.attributes {
            out = out.with(k, v);
        }
        out
    }

    /// Adds `name` = `value`, clipped to [`MAX_ATTRIBUTE_LEN`] bytes, up
    /// to [`MAX_ATTRIBUTES`].
    pub fn with(mut self, name: &str, value: &str) -> Self {
        if self.attributes.len() < MAX_ATTRIBUTES {
            self.attributes
                .insert(clip(name).to_string(), clip(value).to_string());
        }
        self
    }
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_ATTRIBUTE_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_reads_and_writes_back() {
        let t: TraceParent = EXAMPLE.parse().unwrap();
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_hex(), "00f067aa0ba902b7");
        assert!(t.sampled);
        assert_eq!(t.to_string(), EXAMPLE);
        let unsampled: TraceParent = EXAMPLE.replace("-01", "-00").parse().unwrap();
        assert!(!unsampled.sampled);
        // A later version: its first four fields.
        let later: TraceParent = format!("01{}-extra", &EXAMPLE[2..]).parse().unwrap();
        assert_eq!(later.trace_id, t.trace_id);
    }

    #[test]
    fn malformed_traceparents_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "fewer than four fields"),
            ("00-4bf92f35-00f067aa0ba902b7-01", "trace id"),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all zeros",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "lower-case",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version `ff`",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "exactly four",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
                "flags",
            ),
        ] {
            let err = text.parse::<TraceParent>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_origin_is_bounded() {
        let mut o = TraceOrigin::default();
        for i in 0..100 {
            o = o.with(&format!("a{i}"), &"é".repeat(300));
        }
        assert_eq!(o.attributes.len(), MAX_ATTRIBUTES);
        assert!(o.attributes.values().all(|v| v.len() <= MAX_ATTRIBUTE_LEN));
        let wide = TraceOrigin {
            attributes: (0..100)
                .map(|i| (format!("k{i}"), "v".repeat(1000)))
                .collect(),
            ..TraceOrigin::default()
        };
        assert_eq!(wide.bounded().attributes.len(), MAX_ATTRIBUTES);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<TraceOrigin>(&json).unwrap(), o);
        assert_eq!(
            serde_json::to_string(&TraceOrigin::default()).unwrap(),
            "{}"
        );
    }
}
