//! The binary's `check-config`, and the Prometheus endpoint of a running gateway.

mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};

#[test]
fn check_config_accepts_good_and_names_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:5020".parse().unwrap();
    let good = config_text(
        "gw-cli",
        &[("m-1".into(), addr, 1)],
        MQTT_PORT,
        &dir.path().join("spool"),
    );
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, &good).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waterworks-gateway"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("polls 1 meters") && stdout.contains("waterworks-sim-v1"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("spool").exists(),
        "check-config starts nothing"
    );

    std::fs::write(
        &path,
        good.replace("unit_id = 1", "unit_id = 1\ncolour = \"blue\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waterworks-gateway"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("gw.toml") && stderr.contains("line 14") && stderr.contains("colour"),
        "{stderr}"
    );

    // A username other than the gateway id: the broker's ACL would refuse
    // every publish (and still PUBACK it), so it is refused here.
    std::fs::write(
        &path,
        good.replace(
            "[uplink]\n",
            "[uplink]\nusername = \"gw-other\"\npassword = \"secret\"\n",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waterworks-gateway"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("uplink.username")
            && stderr.contains("gw-other")
            && stderr.contains("gw-cli"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_polls() {
    let start = t("2026-10-01T00:00:00Z");
    let clock = Clock::Manual(ManualClock::new(start));
    let stop_device = CancellationToken::new();
    let dev = fake_device(
        HashMap::from([(1, Unit::Good { base_l: 5 }), (2, Unit::Exceptions)]),
        clock.clone(),
        stop_device.clone(),
    )
    .await;
    let gw = unique("gw-metrics");
    let meters = vec![(format!("{gw}-ok"), dev, 1), (format!("{gw}-exc"), dev, 2)];
    let dir = tempfile::tempdir().unwrap();
    let broker = PrivateBroker::start(dir.path()).await;
    let mut text = config_text(&gw, &meters, broker.port, &dir.path().join("spool"));
    text = text.replacen(
        "\n\n[poll]",
        "\nmetrics_listen = \"127.0.0.1:0\"\n\n[poll]",
        1,
    );
    std::fs::write(dir.path().join("gw.toml"), text).unwrap();
    let config = gateway::load_config(&dir.path().join("gw.toml")).unwrap();
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock, shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    wait_progress(&mut progress, "round", |p| {
        p.last_round == Some(start) && p.acked_seq == 1
    })
    .await;
    let addr = handle.metrics_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let ok_line = format!("gateway_polls_total{{meter_id=\"{gw}-ok\",outcome=\"ok\"}} 1");
    let exc_line = format!("gateway_polls_total{{meter_id=\"{gw}-exc\",outcome=\"exception\"}} 1");
    assert!(body.contains(&ok_line), "{body}");
    assert!(body.contains(&exc_line), "{body}");
    assert!(body.contains("gateway_uplink_connected"), "{body}");
    shutdown.cancel();
    handle.wait().await.unwrap();
    stop_device.cancel();
}
