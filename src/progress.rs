//! The demo's progress, for a person watching it.
//!
//! On a terminal: a progress bar (indicatif) on standard error with the
//! rounds read, the readings published, their rate and the time left. Not on
//! a terminal (a log, CI): a plain line per simulated day, and at least one
//! every [`LINE_EVERY`], each written whole to standard error (unbuffered, so
//! it shows as soon as it is written).

use chrono::{DateTime, Duration, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::time::Instant;

/// Longest pause between two plain progress lines.
pub const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Nothing (tests, `verbose = false`).
    Off,
    /// A bar redrawn in place (standard error is a terminal).
    Bar,
    /// A line at a time.
    Lines,
}

impl Style {
    /// A bar when standard error is a terminal, else lines; `Off` unless `verbose`.
    pub fn detect(verbose: bool) -> Style {
        if !verbose {
            Style::Off
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// Progress of the demo's rounds (one per 15-minute slot).
pub struct DemoProgress {
    style: Style,
    bar: Option<ProgressBar>,
    total_rounds: u64,
    started: Instant,
    last_line: Instant,
    last_day: Option<String>,
}

impl DemoProgress {
    pub fn new(style: Style, total_rounds: u64) -> DemoProgress {
        let bar = (style == Style::Bar).then(|| {
            let b = ProgressBar::with_draw_target(
                Some(total_rounds),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            b.set_style(
                ProgressStyle::with_template(
                    "  {bar:30.cyan/blue} {pos}/{len} rounds · {msg} · {elapsed_precise}, about {eta} left",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b
        });
        let now = Instant::now();
        DemoProgress {
            style,
            bar,
            total_rounds,
            started: now,
            last_line: now,
            last_day: None,
        }
    }

    /// A round is done: `rounds` of the total, the clock at `slot`,
    /// `readings` published so far.
    pub fn round(&mut self, rounds: u64, slot: DateTime<Utc>, readings: u64) {
        let rate = rate(readings, self.started.elapsed());
        let day = (slot + Duration::hours(9)).format("%Y-%m-%d").to_string();
        match self.style {
            Style::Off => {}
            Style::Bar => {
                if let Some(b) = &self.bar {
                    b.set_position(rounds);
                    b.set_message(format!(
                        "{day} (KST) · {} readings · {}/s",
                        thousands(readings),
                        thousands(rate)
                    ));
                }
            }
            Style::Lines => {
                let new_day = self.last_day.as_deref() != Some(day.as_str());
                if new_day || self.last_line.elapsed() >= LINE_EVERY {
                    self.line(rounds, &day, readings, rate);
                }
            }
        }
        self.last_day = Some(day);
    }

    fn line(&mut self, rounds: u64, day: &str, readings: u64, rate: u64) {
        let left = time_left(self.started.elapsed(), rounds, self.total_rounds);
        let pct = rounds * 100 / self.total_rounds.max(1);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "  read {day} (KST) · round {rounds}/{} ({pct}%) · {} readings published · {}/s · about {} left",
            self.total_rounds,
            thousands(readings),
            thousands(rate),
            human(left)
        );
        let _ = err.flush();
        self.last_line = Instant::now();
    }

    /// Rounds are over (all of them, or stopped); clears the bar.
    pub fn finish(&mut self, note: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.style != Style::Off && !note.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{note}");
            let _ = err.flush();
        }
    }
}

impl Drop for DemoProgress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Whole readings per second.
fn rate(readings: u64, elapsed: std::time::Duration) -> u64 {
    let ms = elapsed.as_millis().max(1) as u64;
    readings.saturating_mul(1000) / ms
}

/// The time the remaining rounds take at the pace so far.
pub fn time_left(elapsed: std::time::Duration, done: u64, total: u64) -> std::time::Duration {
    if done == 0 {
        return std::time::Duration::ZERO;
    }
    let per_round = elapsed / u32::try_from(done).unwrap_or(u32::MAX);
    per_round * u32::try_from(total.saturating_sub(done)).unwrap_or(u32::MAX)
}

/// "42 s", "3 min 5 s", "1 h 2 min".
pub fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(v: u64) -> String {
    crate::summary::won(i64::try_from(v).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn time_left_follows_the_pace_so_far() {
        assert_eq!(time_left(D::from_secs(10), 0, 100), D::ZERO);
        assert_eq!(time_left(D::from_secs(10), 10, 100), D::from_secs(90));
        assert_eq!(time_left(D::from_secs(10), 100, 100), D::ZERO);
    }

    #[test]
    fn readable_figures() {
        assert_eq!(human(D::from_secs(42)), "42 s");
        assert_eq!(human(D::from_secs(185)), "3 min 5 s");
        assert_eq!(human(D::from_secs(3720)), "1 h 2 min");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(5_000, D::from_secs(2)), 2_500);
    }
}
