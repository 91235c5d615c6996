//! Colors, where `--color`, `NO_COLOR` and a terminal allow (anstream
//! decides, as it does for clap): `error:` and `hint:`, `blocked:`, and a
//! run's `status:` line. Text is written with its styles; a stream that
//! must not have them gets them stripped.

use anstyle::{AnsiColor, Style};

pub const ERROR: Style = AnsiColor::Red.on_default().bold();
pub const HINT: Style = AnsiColor::Cyan.on_default().bold();
pub const WARN: Style = AnsiColor::Yellow.on_default().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();

/// Sets the choice for every stream this process writes.
pub fn init(choice: clap::ColorChoice) {
    let choice = match choice {
        clap::ColorChoice::Always => anstream::ColorChoice::Always,
        clap::ColorChoice::Never => anstream::ColorChoice::Never,
        clap::ColorChoice::Auto => anstream::ColorChoice::Auto,
    };
    choice.write_global();
}

/// Whether what goes to stderr is colored (for writers that do not go
/// through anstream, such as the worker's logs).
pub fn on_stderr() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// `text` in `style`.
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// `text` with its `status: …` lines colored by how the run ended, whole
/// lines so that what they say reads (and searches) the same.
pub fn status_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.strip_prefix("status: ") {
            Some(rest) => {
                let style = match rest.split_whitespace().next().unwrap_or_default() {
                    "resolved" => GOOD,
                    "escalated" | "awaiting-approval" | "halted" => WARN,
                    _ => ERROR,
                };
                let (body, nl) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
                format!("{}{nl}", paint(style, body))
            }
            None => line.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_is_colored_whole_and_reads_the_same() {
        let text =
            "03:04  step  ok\nstatus: resolved after 6 steps\nscenario: took the expected path\n";
        let colored = status_lines(text);
        assert!(colored.contains("\u{1b}["), "{colored:?}");
        let plain = anstream::adapter::strip_str(&colored).to_string();
        assert_eq!(plain, text);
        assert!(colored.contains("status: resolved after 6 steps"));
    }
}
