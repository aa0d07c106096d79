//! Issue 24: each demo run's gateway state belongs to its database.
//!
//! A first demo (the `waterworks` binary, as a user runs it) reads the last
//! days of September through a private Mosquitto into database A; the broker
//! is stopped so the gateways' spools fill with unsent batches, and the demo
//! is killed with SIGKILL. A second demo, with the same state folder and the
//! same fleet, reads October into a fresh database B through the embedded
//! broker. Database B must hold no September reading (stored or quarantined)
//! and ingest must log no "batch sequence gap": the second run starts fresh
//! spools and says so. Needs `mosquitto` on PATH and PostgreSQL at
//! DATABASE_URL (default: the local server).

mod common;

use common::{fresh_database, unique};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use waterworks_test_support::mosquitto::Mosquitto;

/// Bytes of spooled batches (segment files) under the demo's spool folder.
fn spooled_bytes(spool: &Path) -> u64 {
    let mut total = 0;
    for gw in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(gw.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().starts_with("seg-") {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn demo(state: &Path, db_url: &str, period: &str, days: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_waterworks"));
    c.args(["demo", "--meters", "40", "--gateways", "2", "--no-faults"])
        .args(["--period", period, "--days", days])
        .arg("--database-url")
        .arg(db_url)
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn,rumqttd=off,rumqttc=error,sqlx=error")
        .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_gets_no_reading_of_a_killed_run() {
    let prefix = unique("fresh");
    let db_a = fresh_database(&format!("ww_test_{prefix}_a")).await;
    let db_b = fresh_database(&format!("ww_test_{prefix}_b")).await;
    let state = tempfile::tempdir().expect("tempdir");
    let broker_dir = tempfile::tempdir().expect("tempdir");
    let spool: PathBuf = state.path().join("spool");
    // A private broker without persistence (waterworks_test_support).
    let mut broker = Mosquitto::start_in(
        broker_dir.path(),
        "allow_anonymous true\npersistence false\n",
    );

    // Run 1: September into database A, killed while its spools hold batches
    // the broker never took.
    let log_a = std::fs::File::create(state.path().join("run-a.log")).expect("log file");
    let mut killed = demo(state.path(), &db_a, "2026-09", "3")
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{}", broker.port))
        .stdout(Stdio::null())
        .stderr(log_a)
        .spawn()
        .expect("start the first demo");
    let deadline = Instant::now() + Duration::from_secs(120);
    while spooled_bytes(&spool) == 0 {
        if let Some(status) = killed.try_wait().expect("try_wait") {
            panic!(
                "the first demo ended ({status}) before spooling: {}",
                std::fs::read_to_string(state.path().join("run-a.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the first demo spooled nothing in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill();
    // The gateways keep polling into their spools while the broker is away.
    let before = spooled_bytes(&spool);
    let deadline = Instant::now() + Duration::from_secs(60);
    while spooled_bytes(&spool) < before + 20_000 {
        assert!(
            killed.try_wait().expect("try_wait").is_none(),
            "the first demo ended while the broker was down: {}",
            std::fs::read_to_string(state.path().join("run-a.log")).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "the spools did not grow while the broker was down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    killed.kill().expect("SIGKILL the first demo");
    killed.wait().expect("reap the first demo");
    assert!(
        spooled_bytes(&spool) > 0,
        "the killed run left unsent batches behind"
    );

    // Run 2: October's last day into the fresh database B, same state folder.
    let out = tokio::task::spawn_blocking({
        let mut c = demo(state.path(), &db_b, "2026-10", "1");
        move || c.output()
    })
    .await
    .expect("join")
    .expect("run the second demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the second demo failed: {stderr}\n{stdout}"
    );
    assert!(
        !stderr.contains("sequence gap"),
        "ingest saw a sequence gap on the fresh database: {stderr}"
    );
    assert!(
        stderr.contains("removed 2 gateway spool(s)"),
        "the demo says it started fresh spools: {stderr}"
    );

    let october: chrono::DateTime<chrono::Utc> = "2026-09-30T15:00:00Z".parse().expect("ts");
    let pool = waterworks::database::connect(&db_b, 1)
        .await
        .expect("database B");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM metering.readings_v1 WHERE ts < $1) \
              + (SELECT count(*) FROM metering.quarantine WHERE ts < $1)",
    )
    .bind(october)
    .fetch_one(&pool)
    .await
    .expect("count September readings");
    assert_eq!(leaked, 0, "readings of the killed run reached database B");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM metering.readings_v1")
        .fetch_one(&pool)
        .await
        .expect("count");
    // 40 meters, a day of 15-minute rounds and the closing read.
    assert_eq!(stored, 40 * 97, "the second run stored its own day");
    pool.close().await;
}
