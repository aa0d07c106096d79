//! Issue 24: progress a person can watch, and a clean stop.
//!
//! The `waterworks demo` binary, not on a terminal, writes plain progress
//! lines (rounds, readings, rate, time left) to standard error as it goes;
//! SIGTERM midway ends it cleanly (exit status 0) with the summary so far on
//! standard output. Needs PostgreSQL at DATABASE_URL (default: the local
//! server).

mod common;

use common::{fresh_database, unique};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_demo_with_the_summary_so_far() {
    let db = fresh_database(&format!("ww_test_{}", unique("sigterm"))).await;
    let state = tempfile::tempdir().expect("tempdir");
    let err_path = state.path().join("stderr.log");
    let out_path = state.path().join("stdout.log");
    // The whole month of 40 meters: far more rounds than the test waits for.
    let mut child = Command::new(env!("CARGO_BIN_EXE_waterworks"))
        .args(["demo", "--meters", "40", "--gateways", "2", "--no-faults"])
        .args(["--period", "2026-10"])
        .arg("--database-url")
        .arg(&db)
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start the demo");

    // Plain progress lines arrive while it runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        if err.lines().filter(|l| l.contains("round ")).count() >= 2 {
            let line = err.lines().find(|l| l.contains("round ")).expect("a line");
            assert!(
                line.contains("/2977 (")
                    && line.contains("readings published")
                    && line.contains("/s")
                    && line.contains("left"),
                "a progress line gives rounds of the total, readings, rate and time left: {line}"
            );
            break;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the demo ended ({status}) before any progress line: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no progress line within 120 s: {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success(), "SIGTERM sent");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).expect("stdout");
    let err = std::fs::read_to_string(&err_path).expect("stderr");
    assert!(
        status.success(),
        "a clean exit after SIGTERM ({status}): {err}"
    );
    assert!(
        out.contains("=== Waterworks demo: summary ==="),
        "the summary is printed: {out}\n{err}"
    );
    let stopped = out
        .lines()
        .find(|l| l.starts_with("stopped "))
        .unwrap_or_else(|| panic!("the summary says it was stopped: {out}"));
    let rounds: usize = stopped
        .split("after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("rounds in {stopped:?}"));
    assert!(
        (1..2977).contains(&rounds),
        "stopped midway: {rounds} rounds"
    );
    let readings = out
        .lines()
        .find(|l| l.starts_with("readings "))
        .unwrap_or_else(|| panic!("the summary counts readings: {out}"));
    let published: usize = readings
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("published in {readings:?}"));
    assert!(published > 0, "readings were published before the stop");
    assert!(
        !out.contains("bills created"),
        "nothing is billed on a stopped run: {out}"
    );
}
