//! Tracing set-up for binaries: `RUST_LOG` filters (default `info`), and
//! `LOG_FORMAT=json` switches to one JSON object per line for log shippers.
//! ANSI colours only when stderr is a terminal and `NO_COLOR` is unset or
//! empty (<https://no-color.org>): a pod's log, a file or a pipe gets plain
//! text, never escape codes.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` holds a non-empty value.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(
            use_colour(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None), "a pipe or a pod's log");
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }
}
