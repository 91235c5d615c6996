//! Change calendars: named windows in which a calendar is CLOSED (a
//! freeze); OPEN at every other time. Policies read them from a change's
//! context (`context.calendars.closed.contains("friday-freeze")`), and
//! `runbook calendar` shows the state now and when it next changes.
//!
//! ```toml
//! # calendars.toml, in the policy directory
//! [[calendar]]
//! name = "friday-freeze"
//! closed = [
//!   { weekday = "fri", from = "12:00", to = "24:00" },                  # every week, UTC
//!   { start = "2026-12-24T00:00:00Z", end = "2026-12-27T00:00:00Z" },   # once
//! ]
//! ```

use anyhow::Result;
use runbook_core::error::hinted;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The calendars file in a policy directory.
pub const FILE: &str = "calendars.toml";
const HINT: &str = "a calendar is `[[calendar]]` with `name` and `closed`, a list of windows: `{ start = \"2026-12-24T00:00:00Z\", end = \"2026-12-27T00:00:00Z\" }` (RFC 3339) or `{ weekday = \"fri\", from = \"12:00\", to = \"24:00\" }` (UTC); no two windows of a calendar may overlap";
const MAX_CALENDARS: usize = 256;
const MAX_WINDOWS: usize = 1024;
const DAY_MS: u64 = 86_400_000;
const WEEK_MIN: u64 = 7 * 1440;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    calendar: Vec<CalendarDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarDef {
    name: String,
    #[serde(default)]
    closed: Vec<WindowDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowDef {
    start: Option<String>,
    end: Option<String>,
    weekday: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A window in which the calendar is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// From `start` to `end`, unix ms.
    Once { start: u64, end: u64 },
    /// Every week, minutes from Monday 00:00 UTC.
    Weekly { from: u64, to: u64 },
}

#[derive(Debug, Clone)]
pub struct Calendar {
    pub name: String,
    pub closed: Vec<Window>,
}

/// Where a calendar stands at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub name: String,
    pub closed: bool,
    /// When it next changes (unix ms), if it ever does.
    pub next_change_ms: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Calendars {
    pub path: Option<PathBuf>,
    pub calendars: Vec<Calendar>,
}

impl Calendars {
    /// Reads `path`; every window checked (well-formed, not empty, no
    /// overlap within a calendar).
    pub fn load(path: &Path) -> Result<Self> {
        let text = runbook_core::files::read_text(path, "calendars file")?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |line: Option<usize>, msg: String| {
            let at = line.map_or(String::new(), |l| format!(", line {l}"));
            hinted(
                format!("calendars file `{}`{at}: {msg}", path.display()),
                HINT,
            )
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| runbook_core::files::line_column(&text.as_bytes()[..s.start]).0);
            bad(line, e.message().trim().to_string())
        })?;
        if file.calendar.len() > MAX_CALENDARS {
            return Err(bad(None, format!("more than {MAX_CALENDARS} calendars")));
        }
        let line_of = |name: &str| {
            text.find(&format!("\"{name}\""))
                .map(|at| runbook_core::files::line_column(&text.as_bytes()[..at]).0)
        };
        let mut calendars: Vec<Calendar> = Vec::new();
        for def in file.calendar {
            let line = line_of(&def.name);
            if !valid_name(&def.name) {
                return Err(bad(
                    line,
                    format!(
                        "calendar name `{}` is not a name: use letters, digits, `-` and `_`",
                        def.name
                    ),
                ));
            }
            if calendars.iter().any(|c| c.name == def.name) {
                return Err(bad(
                    line,
                    format!("calendar `{}` is defined twice", def.name),
                ));
            }
            if def.closed.len() > MAX_WINDOWS {
                return Err(bad(
                    line,
                    format!(
                        "calendar `{}` has more than {MAX_WINDOWS} windows",
                        def.name
                    ),
                ));
            }
            let mut windows = Vec::new();
            for (i, w) in def.closed.iter().enumerate() {
                let window = window(w).map_err(|m| {
                    bad(
                        line,
                        format!("calendar `{}`, window {}: {m}", def.name, i + 1),
                    )
                })?;
                if let Some(j) = windows.iter().position(|o| overlap(o, &window)) {
                    return Err(bad(
                        line,
                        format!(
                            "calendar `{}`: windows {} and {} overlap",
                            def.name,
                            j + 1,
                            i + 1
                        ),
                    ));
                }
                windows.push(window);
            }
            calendars.push(Calendar {
                name: def.name,
                closed: windows,
            });
        }
        Ok(Self {
            path: Some(path.to_path_buf()),
            calendars,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.calendars.iter().map(|c| c.name.as_str())
    }

    /// Every calendar's state at `now_ms`.
    pub fn at(&self, now_ms: u64) -> Vec<State> {
        self.calendars.iter().map(|c| c.at(now_ms)).collect()
    }
}

impl Calendar {
    pub fn closed_at(&self, t: u64) -> bool {
        self.closed.iter().any(|w| w.contains(t))
    }

    pub fn at(&self, now_ms: u64) -> State {
        let closed = self.closed_at(now_ms);
        // The next instant the state flips: walk window edges forward
        // (adjacent windows keep it closed), a bounded number of times.
        let mut t = now_ms;
        let mut next = None;
        for _ in 0..64 {
            let edge = self.closed.iter().filter_map(|w| w.next_edge(t)).min();
            match edge {
                None => break,
                Some(e) if self.closed_at(e) != closed => {
                    next = Some(e);
                    break;
                }
                Some(e) => t = e,
            }
        }
        State {
            name: self.name.clone(),
            closed,
            next_change_ms: next,
        }
    }
}

impl Window {
    pub fn contains(&self, t: u64) -> bool {
        match *self {
            Window::Once { start, end } => start <= t && t < end,
            Window::Weekly { from, to } => {
                let m = minute_of_week(t);
                from <= m && m < to
            }
        }
    }

    /// The first edge (a start or an end) after `t`.
    fn next_edge(&self, t: u64) -> Option<u64> {
        match *self {
            Window::Once { start, end } => [start, end].into_iter().find(|&e| e > t),
            Window::Weekly { from, to } => {
                // Minutes since the Monday before `t`, as instants.
                // (Saturating: the first days after 1970 have no Monday before.)
                let week_start = t.saturating_sub(minute_of_week(t) * 60_000 + t % 60_000);
                [0u64, 1]
                    .iter()
                    .flat_map(|w| {
                        [from, to].map(|m| week_start + w * WEEK_MIN * 60_000 + m * 60_000)
                    })
                    .find(|&e| e > t)
            }
        }
    }
}

/// Minutes since Monday 00:00 UTC (1970-01-01 was a Thursday).
pub fn minute_of_week(t: u64) -> u64 {
    let days = t / DAY_MS;
    let weekday = (days + 3) % 7;
    weekday * 1440 + (t % DAY_MS) / 60_000
}

/// `mon`..`sun` of an instant.
pub fn weekday_name(t: u64) -> &'static str {
    WEEKDAYS[(minute_of_week(t) / 1440) as usize]
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn window(w: &WindowDef) -> Result<Window, String> {
    match (&w.start, &w.end, &w.weekday, &w.from, &w.to) {
        (Some(start), Some(end), None, None, None) => {
            let start = instant(start)?;
            let end = instant(end)?;
            if end <= start {
                return Err("its `end` is not after its `start`".into());
            }
            Ok(Window::Once { start, end })
        }
        (None, None, Some(day), Some(from), Some(to)) => {
            let day = WEEKDAYS
                .iter()
                .position(|d| d.eq_ignore_ascii_case(day))
                .ok_or_else(|| {
                    format!("`weekday` `{day}` is not one of mon, tue, wed, thu, fri, sat, sun")
                })? as u64;
            let (from, to) = (clock(from)?, clock(to)?);
            if to <= from {
                return Err("its `to` is not after its `from`".into());
            }
            Ok(Window::Weekly {
                from: day * 1440 + from,
                to: day * 1440 + to,
            })
        }
        _ => Err("give either `start` and `end`, or `weekday`, `from` and `to`".into()),
    }
}

fn instant(raw: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(raw)
        .map_err(|e| format!("`{raw}` is not an RFC 3339 time like `2026-12-24T00:00:00Z`: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{raw}` is before 1970"))?
        .as_millis() as u64)
}

/// `HH:MM` (00:00 to 24:00) as minutes.
fn clock(raw: &str) -> Result<u64, String> {
    let bad = || format!("`{raw}` is not a time of day like `12:00` (00:00 to 24:00)");
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    let (h, m): (u64, u64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) || h.to_string().len() > 2 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn overlap(a: &Window, b: &Window) -> bool {
    match (a, b) {
        (Window::Once { start: s1, end: e1 }, Window::Once { start: s2, end: e2 }) => {
            s1 < e2 && s2 < e1
        }
        (Window::Weekly { from: f1, to: t1 }, Window::Weekly { from: f2, to: t2 }) => {
            f1 < t2 && f2 < t1
        }
        // A date inside a weekly window is no contradiction.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: &str) -> u64 {
        instant(t).unwrap()
    }

    #[test]
    fn a_weekly_freeze_is_closed_inside_and_says_when_it_opens() {
        let c = Calendars::parse(
            r#"
[[calendar]]
name = "friday-freeze"
closed = [{ weekday = "fri", from = "12:00", to = "24:00" }]
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        // 2026-12-04 is a Friday.
        assert_eq!(weekday_name(ms("2026-12-04T13:00:00Z")), "fri");
        let s = &c.at(ms("2026-12-04T13:00:00Z"))[0];
        assert!(s.closed);
        assert_eq!(s.next_change_ms, Some(ms("2026-12-05T00:00:00Z")));
        let s = &c.at(ms("2026-12-04T11:59:00Z"))[0];
        assert!(!s.closed);
        assert_eq!(s.next_change_ms, Some(ms("2026-12-04T12:00:00Z")));
        // Saturday: open until next Friday noon.
        let s = &c.at(ms("2026-12-05T10:00:00Z"))[0];
        assert_eq!(s.next_change_ms, Some(ms("2026-12-11T12:00:00Z")));
    }

    #[test]
    fn adjacent_windows_stay_closed_until_the_last_ends() {
        let c = Calendars::parse(
            r#"
[[calendar]]
name = "holidays"
closed = [
  { start = "2026-12-24T00:00:00Z", end = "2026-12-25T00:00:00Z" },
  { start = "2026-12-25T00:00:00Z", end = "2026-12-27T00:00:00Z" },
]
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        let s = &c.at(ms("2026-12-24T10:00:00Z"))[0];
        assert!(s.closed);
        assert_eq!(s.next_change_ms, Some(ms("2026-12-27T00:00:00Z")));
        let s = &c.at(ms("2026-12-28T10:00:00Z"))[0];
        assert!(!s.closed);
        assert_eq!(s.next_change_ms, None);
    }
}
