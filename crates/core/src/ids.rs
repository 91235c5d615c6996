//! Validated names used across manifests and runbooks.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A kebab-case name: step ids and plugin names. Lowercase ASCII letters,
/// digits and single `-` between words, so they read the same in YAML, TOML,
/// file names and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > 64 {
            return Err("must be at most 64 characters".into());
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(if c == '_' {
                "words must be separated with `-`, not `_`".into()
            } else {
                format!("`{c}` is not allowed: use lowercase letters, digits and `-`")
            });
        }
        if raw.starts_with('-') || raw.ends_with('-') || raw.contains("--") {
            return Err("`-` only goes between words".into());
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Name::parse(&raw)
            .map_err(|why| serde::de::Error::custom(format!("invalid name `{raw}`: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn names_are_kebab_case() {
        assert!(Name::parse("check-latency").is_ok());
        assert!(Name::parse("step2").is_ok());
        for bad in ["", "Check", "check_latency", "-a", "a-", "a--b", "a b"] {
            assert!(Name::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            Name::parse("a_b").unwrap_err(),
            "words must be separated with `-`, not `_`"
        );
    }
}
