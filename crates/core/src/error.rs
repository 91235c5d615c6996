//! Errors that carry a `hint:` for the person at the terminal.

use std::fmt;

/// An error whose message is complete on its own, plus what to do about it.
/// `main` prints the chain, then the hint.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// `bail!` with a hint.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// `err`, whole chain in one message, with `hint` added.
pub fn with_hint(err: anyhow::Error, hint: impl Into<String>) -> anyhow::Error {
    hinted(format!("{err:#}"), hint)
}

/// The first hint anywhere in the chain.
pub fn hint_of(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Hinted>())
        .map(|h| h.hint.as_str())
}
