//! Progress on long work, on stderr and only where it is a terminal
//! (indicatif hides its bars anywhere else): loading and compiling
//! plugins before a run or a check, runs of `bench`, scenarios of `test`,
//! registry transfers.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// A spinner saying what is being done and for how long.
pub fn spinner(message: impl Into<std::borrow::Cow<'static, str>>) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar over `len` things of a kind (`runs`, `scenarios`).
pub fn bar(len: u64, things: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{bar:30}} {{pos}}/{{len}} {things} ({{elapsed}})"
    )) {
        bar.set_style(style);
    }
    bar
}
