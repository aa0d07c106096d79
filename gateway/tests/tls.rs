//! The uplink over TLS (`mqtts://`) to a private Mosquitto whose certificate
//! is signed by a test CA given as `uplink.tls_ca_file` (both made by
//! `waterworks_test_support::certs`). Needs `openssl`.

mod common;

use common::*;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    waterworks_test_support::certs::broker_certs(d);
    let extra = waterworks_test_support::mosquitto::tls_listener_options(d, "ca.crt");
    let broker = PrivateBroker::start_with(d, &extra).await;

    let start = t("2026-10-01T00:00:00Z");
    let clock = Clock::Manual(ManualClock::new(start));
    let stop_device = CancellationToken::new();
    let dev = fake_device(
        HashMap::from([(1, Unit::Good { base_l: 9 })]),
        clock.clone(),
        stop_device.clone(),
    )
    .await;
    let gw = unique("gw-tls");
    let config = tls_config(d, &gw, dev, broker.port, "ca.crt");
    assert_eq!(
        config.uplink.tls_ca_file.as_deref(),
        Some(d.join("ca.crt").as_path())
    );
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock, shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    wait_progress(&mut progress, "a batch PUBACKed over TLS", |p| {
        p.acked_seq == 1
    })
    .await;
    shutdown.cancel();
    handle.wait().await.unwrap();
    stop_device.cancel();
}
