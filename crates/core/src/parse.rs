//! TOML input files (manifests, scenarios, environments, lock and trust
//! files) read and parsed with errors that name the file, the kind of
//! file and what to do; for files that may hold a secret, without
//! quoting their text.

use crate::error::hinted;

/// Reads and parses TOML file `path` (a `kind`: manifest, scenario, ...),
/// then `validate`s it; either failure names the file and carries `hint`.
pub fn load_toml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    kind: &str,
    hint: &str,
    validate: impl FnOnce(&mut T) -> Result<(), String>,
) -> anyhow::Result<T> {
    let text = crate::files::read_text(path, kind)?;
    parse_toml(&text, path, kind, hint, validate)
}

/// [`load_toml`] for files that may hold something secret next to a
/// typo: a parse error gives the line, column and what was wrong, never
/// the file's text.
pub fn load_toml_redacted<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    kind: &str,
    hint: &str,
    validate: impl FnOnce(&mut T) -> Result<(), String>,
) -> anyhow::Result<T> {
    let text = crate::files::read_text(path, kind)?;
    parse_toml_redacted(&text, path, kind, hint, validate)
}

/// [`load_toml_redacted`] for text already read.
pub fn parse_toml_redacted<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &std::path::Path,
    kind: &str,
    hint: &str,
    validate: impl FnOnce(&mut T) -> Result<(), String>,
) -> anyhow::Result<T> {
    let invalid = |why: &str| hinted(format!("invalid {kind} `{}`: {why}", path.display()), hint);
    let mut value: T = toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| {
                let (line, column) = crate::files::line_column(&text.as_bytes()[..s.start]);
                format!("at line {line}, column {column}: ")
            })
            .unwrap_or_default();
        invalid(&format!("{at}{}", redact_quoted(e.message().trim_end())))
    })?;
    validate(&mut value).map_err(|why| invalid(&why))?;
    Ok(value)
}

/// [`load_toml`] for text already read; `path` names it in errors.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &std::path::Path,
    kind: &str,
    hint: &str,
    validate: impl FnOnce(&mut T) -> Result<(), String>,
) -> anyhow::Result<T> {
    let invalid = |why: &str| hinted(format!("invalid {kind} `{}`: {why}", path.display()), hint);
    let mut value: T = toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end()))?;
    validate(&mut value).map_err(|why| invalid(&why))?;
    Ok(value)
}

/// `msg` with every double-quoted string replaced by `"…"`: serde's
/// messages quote the offending value ("invalid type: string \"…\""),
/// which in an environment file may be a secret.
pub fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        match (c, inside) {
            ('"', false) => {
                inside = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                inside = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}
