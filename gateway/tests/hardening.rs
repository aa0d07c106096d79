//! Hardening: one gateway per spool folder (lock file), and a broker whose
//! TLS certificate the gateway must not trust is refused (nothing is sent to
//! it, everything stays in the spool). Needs `mosquitto` and `openssl`.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_cannot_share_a_spool_folder() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::Manual(ManualClock::new(t("2026-10-01T00:00:00Z")));
    let gw = unique("gw-lock");
    // No meters needed: the spool is opened first. The shared broker only
    // lets the first gateway stop at once (an uplink that is down waits out
    // its flush timeout at shutdown).
    std::fs::write(
        dir.path().join("gw.toml"),
        config_text(&gw, &[], MQTT_PORT, &dir.path().join("spool")),
    )
    .unwrap();
    let config = gateway::load_config(&dir.path().join("gw.toml")).unwrap();
    let shutdown = CancellationToken::new();
    let first = gateway::start(config.clone(), clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let e = gateway::start(config.clone(), clock.clone(), CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("in use by another gateway") && e.contains("spool"),
        "{e}"
    );
    shutdown.cancel();
    first.wait().await.unwrap();
    // Released on stop: a restart takes the folder again.
    let shutdown = CancellationToken::new();
    let again = gateway::start(config, clock, shutdown.clone())
        .await
        .unwrap();
    shutdown.cancel();
    again.wait().await.unwrap();
}

fn make_ca(dir: &Path, name: &str) {
    waterworks_test_support::certs::make_ca(dir, name, name);
}

/// A server certificate for `san`, signed by CA `ca`, as `server.crt`/`server.key`.
fn make_server_cert(dir: &Path, ca: &str, san: &str) {
    waterworks_test_support::certs::make_server_cert(dir, ca, "broker", san);
}

/// Runs a gateway against a TLS broker whose certificate was made by
/// `setup`, trusting `trusted_ca`; asserts that a spooled batch is never
/// acknowledged and that the gateway keeps running (retrying) meanwhile.
async fn refused(case: &str, setup: impl Fn(&Path), trusted_ca: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca-a");
    make_ca(d, "ca-b");
    setup(d);
    let extra = waterworks_test_support::mosquitto::tls_listener_options(d, "ca-a.crt");
    let broker = PrivateBroker::start_with(d, &extra).await;
    let clock = Clock::Manual(ManualClock::new(t("2026-10-01T00:00:00Z")));
    let stop_device = CancellationToken::new();
    let dev = fake_device(
        HashMap::from([(1, Unit::Good { base_l: 5 })]),
        clock.clone(),
        stop_device.clone(),
    )
    .await;
    let gw = unique("gw-badtls");
    let config = tls_config(d, &gw, dev, broker.port, &format!("{trusted_ca}.crt"));
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock, shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    wait_progress(&mut progress, "a batch spooled", |p| p.spooled_seq == 1).await;
    // Several connection attempts (250 ms, 500 ms, 1 s backoff) in this time.
    let acked = tokio::time::timeout(
        Duration::from_secs(2),
        progress.wait_for(|p| p.acked_seq > 0),
    )
    .await
    .is_ok();
    assert!(
        !acked,
        "{case}: a batch was acknowledged through an untrusted broker"
    );
    let p = progress.borrow().clone();
    assert_eq!((p.acked_seq, p.pending_batches), (0, 1), "{case}: {p:?}");
    shutdown.cancel();
    handle
        .wait()
        .await
        .expect("stops cleanly, batch kept in the spool");
    stop_device.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_certificate_from_another_ca_is_refused() {
    refused(
        "signed by a CA the gateway does not trust",
        |d| make_server_cert(d, "ca-a", "IP:127.0.0.1"),
        "ca-b",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_certificate_for_another_name_is_refused() {
    refused(
        "trusted CA, but the certificate names another host",
        |d| make_server_cert(d, "ca-a", "DNS:elsewhere.example"),
        "ca-a",
    )
    .await;
}
